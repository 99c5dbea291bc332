#!/usr/bin/env python3
"""Side-by-side benchmark: this supermin vs Debian's supermin 5.2.2 on the
same inputs, in one run, reported as ratios.

    .venv/bin/python benchmarks/bench.py [--repeat N]

Cases: prepare (default mode and --use-installed) and build -f chroot, for
bash+coreutils and for a 140+ package appliance.  Each command runs N times
(default 3) alternating ours/upstream; the median wall time is reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OURS = [sys.executable, "-m", "supermin"]
UPSTREAM = ["/usr/bin/supermin"]
SMALL = ["bash", "coreutils"]
LARGE = ["bash", "coreutils", "util-linux", "e2fsprogs", "perl", "python3", "git", "gcc", "make",
         "openssh-client", "curl", "xz-utils", "zstd", "cpio", "iproute2"]


def installed(names):
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *names],
                         capture_output=True, text=True).stdout
    return [l.split()[0] for l in out.splitlines() if l.split()[1:] == ["ii"]]


def timed(cmd, cleanup):
    cleanup()
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def compare(label, args_ours, args_up, out, repeat):
    def cleanup():
        shutil.rmtree(out, ignore_errors=True)
    ours, up = [], []
    for _ in range(repeat):
        ours.append(timed(OURS + args_ours + ["-o", str(out)], cleanup))
        up.append(timed(UPSTREAM + args_up + ["-o", str(out)], cleanup))
    o, u = statistics.median(ours), statistics.median(up)
    print(f"| {label} | {o:.3f} s | {u:.3f} s | {u / o:.1f}x |", flush=True)
    cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    large = installed(LARGE)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        tmp = Path(tmp)
        print(f"supermin {subprocess.run(OURS + ['-V'], capture_output=True, text=True).stdout.split()[1]} "
              f"vs Debian's {subprocess.run(UPSTREAM + ['-V'], capture_output=True, text=True).stdout.strip()}, "
              f"median of {args.repeat}, {os.cpu_count()} cores")
        print("| case | ours | upstream | speed-up |\n|---|---|---|---|")
        for label, names in (("bash+coreutils", SMALL), (f"large ({len(large)} named)", large)):
            sd = tmp / f"sd-{label.split()[0]}"
            compare(f"prepare {label}", ["--prepare", *names], ["--prepare", *names], tmp / "p", args.repeat)
            compare(f"prepare --use-installed {label}", ["--prepare", "--use-installed", *names],
                    ["--prepare", "--use-installed", *names], tmp / "p", args.repeat)
            subprocess.run(OURS + ["--prepare", "--use-installed", *names, "-o", str(sd)], check=True)
            compare(f"build -f chroot {label}", ["--build", "-f", "chroot", str(sd)],
                    ["--build", "-f", "chroot", str(sd)], tmp / "app", args.repeat)


if __name__ == "__main__":
    main()
