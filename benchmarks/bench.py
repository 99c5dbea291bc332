#!/usr/bin/env python3
"""Side-by-side benchmark: this supermin vs Debian's supermin 5.2.2 on the
same inputs, in one run, reported as ratios.

    .venv/bin/python benchmarks/bench.py [--repeat N]

Cases: prepare (default mode and --use-installed), build -f chroot and
build -f ext2 (same host kernel for both), for bash+coreutils and for a 140+
package appliance; and build -f chroot of bash+coreutils plus a base image
of 100,000 one-byte files (the shape of a hostile or generated tarball).  Each command runs N times (default 3) alternating
ours/upstream, after one untimed warm-up run of each, every run into a
fresh output after a `sync`; the median wall time is reported.  Chroot
outputs are kept until the end (see MANY_FILES).  For ext2 it also reports
root image blocks in use and initrd size.

Boots (`--only boot` runs just these): the small appliance with an /init
that prints a line, under TCG, same kernel and qemu, timed from starting
qemu to that line on the console: upstream's ext2 booted as one boots it
by hand (the bzImage, `console=ttyS0 root=/dev/vda panic=1
no_timer_check`), upstream's ext2 booted the way our `boot()` boots (to
show what the appliance itself contributes), and ours, ext2 and
initramfs, booted by `boot()`.  Runs alternate, after one warm-up each.

run() (`--only run`): `supermin.run(bash+coreutils, "true")` cold (empty
cache) and warm, against `boot()` alone of the same cached appliance; and
the two ways back for 8 MB of output: run()'s output disk (`outputs=`)
against the serial console (base64 on stdout), as time beyond the boot.

The --if-newer no-op (`--only noop`): `supermin --build -f ext2 --if-newer`
of an up-to-date output, upstream's (without --copy-kernel) against ours
through the installed `supermin` command (the native launcher), through
the Python command line (`python -m supermin`), and `build(if_newer=True)`
in-process after import; median of 21 each.

Resolving (`--only resolve`): each backend's database opened and a
closure resolved in-process, median of 20 (pacman's: this host's dpkg
packages written as a pacman local database); and the size of the
bash+coreutils chroot with mawk for awk (now) and with gawk (before the
resolver preferred required providers).
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


_run = 0
_finished: "list[Path]" = []

# This VM's root filesystem is ext4 without a journal.  There ext4 avoids
# reusing a deleted inode for a while (`recently_deleted()` in
# fs/ext4/ialloc.c), and every inode allocation scans past such inodes:
# creating the 9,000 files of the large chroot after deleting a previous
# one cost 1.5-2.5 s of extra kernel time here, even a minute later,
# whichever tool creates them.  So outputs holding many files are kept
# until the benchmark ends; the others are deleted as it goes.
MANY_FILES = 1000


def fresh(base: Path) -> Path:
    """A new output path for every run (so no run writes over, or waits
    on, the previous one's files)."""
    global _run
    _run += 1
    out = base.parent / f"{base.name}.{_run}"
    _finished.append(out)
    return out


def settle():
    """Delete finished outputs with few files and write everything back
    before a run, so that no run pays for the previous one's dirty pages.
    No idle pause: on this VM, memory left idle for a few seconds is handed
    back to the host (free page reporting); a warm-up run per case (below)
    keeps both tools in the same, steady state."""
    while len(_finished) > 1:  # the newest one is about to be written
        out = _finished.pop(0)
        if sum(len(d) + len(f) for _, d, f in os.walk(out)) < MANY_FILES:
            shutil.rmtree(out, ignore_errors=True)
    os.sync()


def timed(cmd, out):
    settle()
    t = time.perf_counter()
    subprocess.run(cmd + ["-o", str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def compare(label, args_ours, args_up, out, repeat):
    ours, up = [], []
    timed(OURS + args_ours, fresh(out))  # warm-up, untimed
    timed(UPSTREAM + args_up, fresh(out))
    for _ in range(repeat):
        ours.append(timed(OURS + args_ours, fresh(out)))
        up.append(timed(UPSTREAM + args_up, fresh(out)))
    o, u = statistics.median(ours), statistics.median(up)
    print(f"| {label} | {o:.3f} s | {u:.3f} s | {u / o:.1f}x |", flush=True)


def ext2_sizes(out):
    root, initrd = out / "root", out / "initrd"
    return root.stat().st_blocks * 512, initrd.stat().st_size


def compare_ext2(label, sd, args_extra, out_ours, out_up, repeat):
    """Time both ext2 builds; return both outputs' sizes."""
    ours, up = [], []
    timed(OURS + ["--build", "-f", "ext2", *args_extra, str(sd)], fresh(out_ours))  # warm-up, untimed
    timed(UPSTREAM + ["--build", "-f", "ext2", str(sd)], fresh(out_up))
    for _ in range(repeat):
        ours_dir = fresh(out_ours)
        ours.append(timed(OURS + ["--build", "-f", "ext2", *args_extra, str(sd)], ours_dir))
        ours_sizes = ext2_sizes(ours_dir)
        up_dir = fresh(out_up)
        up.append(timed(UPSTREAM + ["--build", "-f", "ext2", str(sd)], up_dir))
        up_sizes = ext2_sizes(up_dir)
    o, u = statistics.median(ours), statistics.median(up)
    extra = " " + " ".join(args_extra) if args_extra else ""
    print(f"| build -f ext2{extra} {label} | {o:.3f} s | {u:.3f} s | {u / o:.1f}x |", flush=True)
    return ours_sizes, up_sizes


def many_files_appliance(sd: Path, dest: Path, count: int = 100_000) -> Path:
    """`sd` plus `zz-many.tar.gz`: `count` one-byte files, 1,000 a directory."""
    import io
    import tarfile
    shutil.copytree(sd, dest)
    with tarfile.open(dest / "zz-many.tar.gz", "w:gz", compresslevel=1) as tar:
        for i in range(count):
            info = tarfile.TarInfo(f"srv/d{i // 1000:03d}/f{i:06d}")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return dest


def to_marker(argv, marker=b"BENCH-INIT-RAN", timeout=300):
    """Seconds from starting `argv` (qemu) to `marker` on its console."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""
    try:
        for line in proc.stdout:
            seen += line
            if marker in line:
                return time.perf_counter() - t
            if time.perf_counter() - t > timeout:
                break
        raise RuntimeError(f"{marker!r} never appeared:\n{seen[-2000:].decode(errors='replace')}")
    finally:
        proc.kill()
        proc.wait()


def boot_case(sd, tmp, repeat):
    """Time to the appliance's /init: see the module docstring."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    from supermin._boot import command_line, qemu_command
    booting = with_init(sd, tmp)
    outs = {name: tmp / f"boot-{name}" for name in ("up", "ext2", "initramfs")}
    subprocess.run(UPSTREAM + ["--build", "-f", "ext2", str(booting), "-o", str(outs["up"])], check=True)
    for fmt in ("ext2", "initramfs"):
        subprocess.run(OURS + ["--build", "-f", fmt, str(booting), "-o", str(outs[fmt])], check=True)

    def argv(out, direct, cmdline):
        root = out / "root" if (out / "root").exists() else None
        return qemu_command(out / "kernel", out / "initrd", root, append=cmdline, accel="tcg", direct=direct)

    by_hand = "console=ttyS0 root=/dev/vda panic=1 no_timer_check"
    cases = {
        "upstream ext2, booted by hand": argv(outs["up"], False, by_hand),
        "upstream ext2, booted as boot() boots": argv(outs["up"], True, command_line("/dev/vda")),
        "ours: ext2, boot()": argv(outs["ext2"], True, command_line("/dev/vda")),
        "ours: initramfs, boot()": argv(outs["initramfs"], True, command_line(None)),
    }
    times = {label: [] for label in cases}
    for label, cmd in cases.items():
        to_marker(cmd)  # warm-up, untimed
    for _ in range(repeat):
        for label, cmd in cases.items():
            times[label].append(to_marker(cmd))
    base = statistics.median(times["upstream ext2, booted by hand"])
    print("\n| qemu start to the appliance's /init (TCG, bash+coreutils) | time | vs upstream by hand |")
    print("|---|---|---|")
    for label, ts in times.items():
        m = statistics.median(ts)
        print(f"| {label} | {m:.2f} s | {m / base:.2f}x |", flush=True)
    for name, out in outs.items():
        print(f"| initrd size, {name} | {(out / 'initrd').stat().st_size / 2**20:.1f} MiB | |")


def with_init(sd, tmp):
    """A copy of appliance `sd` whose base image adds an /init that prints a
    line and exits (the kernel then panics and qemu, -no-reboot, stops)."""
    import io, tarfile
    out = tmp / (sd.name + "-init")
    shutil.copytree(sd, out)
    data = b"#!/bin/bash\necho BENCH-INIT-RAN\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("init")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    (out / "init.tar.gz").write_bytes(buf.getvalue())
    return out


def run_case(tmp, repeat):
    """run() cold and warm against boot() alone (TCG), in a cache of its own."""
    os.environ["XDG_CACHE_HOME"] = str(tmp / "run-cache")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import supermin
    from supermin._boot import boot
    t = time.perf_counter()
    first = supermin.run(SMALL, "true", accel="tcg")
    cold = time.perf_counter() - t
    assert not first.cached and first.appliance is not None
    warm, alone = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        assert supermin.run(SMALL, "true", accel="tcg").cached
        warm.append(time.perf_counter() - t)
        t = time.perf_counter()
        boot(first.appliance.kernel, first.appliance.initrd, None, "true", accel="tcg")
        alone.append(time.perf_counter() - t)
    over_disk, over_console = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        r = supermin.run(SMALL, "head -c 8M /dev/zero > /out/f", outputs=tmp / "run-out", accel="tcg")
        over_disk.append(time.perf_counter() - t)
        assert (tmp / "run-out" / "f").stat().st_size == 8 << 20
        t = time.perf_counter()
        r = supermin.run(SMALL, "head -c 8M /dev/zero | base64", accel="tcg")
        over_console.append(time.perf_counter() - t)
        assert len(r.stdout) > 8 << 20
    w, b = statistics.median(warm), statistics.median(alone)
    print("\n| run(bash+coreutils, \"true\"), initramfs, TCG | time |\n|---|---|")
    print(f"| cold (prepare, build, boot) | {cold:.2f} s |")
    print(f"| warm (cached) | {w:.2f} s ({w / b:.2f}x the boot alone) |")
    print(f"| boot() alone of the same appliance | {b:.2f} s |")
    d, c = statistics.median(over_disk) - w, statistics.median(over_console) - w
    print(f"| 8 MB out on the output disk (`outputs=`), beyond the warm run | {d:.2f} s |")
    print(f"| 8 MB out as base64 over the serial console, beyond the warm run | {c:.2f} s |", flush=True)


def noop_case(tmp, repeat=21):
    """The libguestfs hot path with nothing to do, side by side."""
    sd = tmp / "sd-bash+coreutils"
    launcher = Path(sys.executable).parent / "supermin"
    ours = [str(launcher), "--build", "-f", "ext2", "--modules", "boot", "--if-newer", str(sd), "-o", str(tmp / "n-ours")]
    python_cli = [sys.executable, "-m", "supermin", *ours[1:]]
    upstream = UPSTREAM + ["--build", "-f", "ext2", "--if-newer", str(sd), "-o", str(tmp / "n-up")]
    for cmd in (ours, upstream):
        subprocess.run(cmd, check=True, capture_output=True)

    def median_ms(cmd):
        root = Path(cmd[-1]) / "root"
        before = root.stat().st_mtime_ns
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - t)
            assert r.returncode == 0, r.stderr
        assert root.stat().st_mtime_ns == before, f"{cmd[0]} rebuilt"
        return statistics.median(times) * 1000
    up = median_ms(upstream)
    native, py = median_ms(ours), median_ms(python_cli)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import supermin
    inproc = []
    for _ in range(repeat):
        t = time.perf_counter()
        assert supermin.build([sd], tmp / "n-ours", format="ext2", modules=[], if_newer=True).skipped
        inproc.append(time.perf_counter() - t)
    print("\n| `--build -f ext2 --if-newer`, nothing to do | time | vs upstream |\n|---|---|---|")
    print(f"| upstream | {up:.1f} ms | 1.00x |")
    print(f"| ours, `supermin` (native launcher) | {native:.1f} ms | {native / up:.2f}x |")
    print(f"| ours, `python -m supermin` | {py:.1f} ms | {py / up:.2f}x |")
    print(f"| ours, `build(if_newer=True)` in Python after import | {statistics.median(inproc) * 1000:.2f} ms | |",
          flush=True)


def pacman_root_like_this_host(root):
    """A pacman local database (desc and files in pacman's layout) holding
    this host's dpkg packages: names, versions, first alternatives of
    Depends and Pre-Depends, Provides and file lists, so that the pacman
    backend is timed on a database of a real system's size."""
    local = root / "var/lib/pacman/local"
    local.mkdir(parents=True)
    (local / "ALPM_DB_VERSION").write_text("9\n")
    fmt = "${Package}\t${Version}\t${Architecture}\t${Depends}, ${Pre-Depends}\t${Provides}\t${db:Status-Abbrev}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], check=True, capture_output=True, text=True).stdout

    def relation(text):
        text = text.split("|")[0].strip()
        name, _, rest = text.partition(" ")
        name = name.split(":")[0]
        if not name:
            return None
        rest = rest.strip().strip("()").replace(" ", "")
        for op, ours in ((">>", ">"), ("<<", "<"), (">=", ">="), ("<=", "<="), ("=", "=")):
            if rest.startswith(op):
                return f"{name}{ours}{rest[len(op):]}"
        return name

    seen = set()
    for line in out.splitlines():
        name, version, arch, deps, provides, status = line.split("\t")
        if not status.startswith("ii") or name in seen:
            continue
        seen.add(name)
        d = local / f"{name}-{version}"
        d.mkdir()
        dep_lines = [r for r in map(relation, deps.split(",")) if r]
        prov_lines = [r for r in map(relation, provides.split(",")) if r]
        (d / "desc").write_text(f"%NAME%\n{name}\n\n%VERSION%\n{version}\n\n%ARCH%\n{arch}\n\n"
                                + (f"%DEPENDS%\n" + "\n".join(dep_lines) + "\n\n" if dep_lines else "")
                                + (f"%PROVIDES%\n" + "\n".join(prov_lines) + "\n\n" if prov_lines else ""))
        listed = next((p for p in (Path(f"/var/lib/dpkg/info/{name}.list"), Path(f"/var/lib/dpkg/info/{name}:{arch}.list"))
                       if p.exists()), None)
        paths = listed.read_text().splitlines() if listed else []
        files = [p.lstrip("/") + ("/" if os.path.isdir(p) and not os.path.islink(p) else "")
                 for p in paths if p not in ("/.", "/")]
        (d / "files").write_text("%FILES%\n" + "\n".join(files) + "\n\n")
    return root


def resolve_case(tmp, repeat=20):
    """Opening each backend's database and resolving, in-process (this
    host's dpkg database; the 129-package Mariner rpmdb.sqlite with `rpm
    -qa` on it for scale), and what the provider choice saves: the chroot
    of bash+coreutils as built now (awk = mawk, required) against the one
    with gawk taken for awk (bash+coreutils+gawk: what the resolver took
    before it preferred, with gawk installed)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import supermin

    def median_ms(f):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    print("\n| open the database and resolve, in-process | closure | time | for scale |\n|---|---|---|---|")
    n_host = len(supermin.Backend.open("dpkg").packages())
    dpkg = median_ms(lambda: supermin.Backend.open("dpkg").resolve(SMALL))
    closure = supermin.Backend.open("dpkg").resolve(SMALL)
    query = median_ms(lambda: subprocess.run(["dpkg-query", "-W"], check=True, capture_output=True))
    print(f"| dpkg, this host ({n_host} packages), bash coreutils | {len(closure)} packages | {dpkg:.1f} ms "
          f"| `dpkg-query -W` (list only): {query:.1f} ms |")
    fixture = Path(__file__).resolve().parent.parent / "tests/data/rpm/rpmdb-mariner-2.0/rpmdb.sqlite"
    if fixture.exists() and shutil.which("rpm"):
        root = tmp / "mariner"
        (root / "var/lib/rpm").mkdir(parents=True, exist_ok=True)
        shutil.copy(fixture, root / "var/lib/rpm/rpmdb.sqlite")
        rpm = median_ms(lambda: supermin.Backend.open("rpm", root=str(root)).resolve(["bash"]))
        closure = supermin.Backend.open("rpm", root=str(root)).resolve(["bash"])
        qa = median_ms(lambda: subprocess.run(["rpm", "--dbpath", str(root / "var/lib/rpm"), "-qa"], check=True,
                                              capture_output=True))
        print(f"| rpm, Mariner 2.0 rpmdb.sqlite (129 packages), bash | {len(closure)} packages | {rpm:.1f} ms "
              f"| `rpm -qa` (list only): {qa:.1f} ms |")
    if shutil.which("pacman"):
        root = pacman_root_like_this_host(tmp / "pacman-root")
        n = len(list((root / "var/lib/pacman/local").glob("*-*")))
        pac = median_ms(lambda: supermin.Backend.open("pacman", root=str(root)).resolve(SMALL))
        closure = supermin.Backend.open("pacman", root=str(root)).resolve(SMALL)
        q = median_ms(lambda: subprocess.run(["pacman", "--root", str(root), "--dbpath",
                                              str(root / "var/lib/pacman"), "-Q"], check=True, capture_output=True))
        print(f"| pacman, this host's packages as a local database ({n} packages), bash coreutils "
              f"| {len(closure)} packages | {pac:.1f} ms | `pacman -Q` (list only): {q:.1f} ms |")
    alpine = Path(__file__).resolve().parent.parent / "tests/data/apk/alpine-3.4-root"
    if alpine.exists():
        ours = median_ms(lambda: supermin.Backend.open("apk", root=str(alpine)).resolve(["alpine-base"]))
        closure = supermin.Backend.open("apk", root=str(alpine)).resolve(["alpine-base"])
        info = median_ms(lambda: subprocess.run([str(alpine / "sbin/apk.static"), "--root", str(alpine), "info"],
                                                check=True, capture_output=True))
        print(f"| apk, Alpine 3.4 installed db (16 packages), alpine-base | {len(closure)} packages | {ours:.1f} ms "
              f"| `apk info` (list only): {info:.1f} ms |")
    if installed(["gawk", "mawk"]) != ["gawk", "mawk"]:
        return
    print("\n| bash+coreutils chroot, gawk and mawk installed | packages | files | bytes |\n|---|---|---|---|")
    for label, names in (("now: awk = mawk (required)", SMALL),
                         ("before: awk = gawk (bash coreutils gawk)", SMALL + ["gawk"])):
        out = tmp / f"awk-{len(names)}"
        r = supermin.build(names, out, format="chroot")
        size = sum(p.lstat().st_size for p in out.rglob("*") if p.is_file() and not p.is_symlink())
        print(f"| {label} | {len(r.packages)} | {r.files_copied} | {size / 2**20:.1f} MiB |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["many-files", "boot", "run", "noop", "resolve"],
                    help="run one case only (many-files: the 100,000-file base image; boot: the boot times; "
                    "run: run() cold and warm)")
    args = ap.parse_args()
    large = installed(LARGE)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        tmp = Path(tmp)
        print(f"supermin {subprocess.run(OURS + ['-V'], capture_output=True, text=True).stdout.split()[1]} "
              f"vs Debian's {subprocess.run(UPSTREAM + ['-V'], capture_output=True, text=True).stdout.strip()}, "
              f"median of {args.repeat}, {os.cpu_count()} cores")
        print("| case | ours | upstream | speed-up |\n|---|---|---|---|")
        sizes = {}
        cases = (("bash+coreutils", SMALL), (f"large ({len(large)} named)", large))
        if args.only:
            cases = ()
            subprocess.run(OURS + ["--prepare", "--use-installed", *SMALL, "-o", str(tmp / "sd-bash+coreutils")],
                           check=True)
        if args.only == "boot":
            boot_case(tmp / "sd-bash+coreutils", tmp, args.repeat)
            return
        if args.only == "run":
            run_case(tmp, args.repeat)
            return
        if args.only == "noop":
            noop_case(tmp)
            return
        if args.only == "resolve":
            resolve_case(tmp)
            return
        for label, names in cases:
            sd = tmp / f"sd-{label.split()[0]}"
            compare(f"prepare {label}", ["--prepare", *names], ["--prepare", *names], tmp / "p", args.repeat)
            compare(f"prepare --use-installed {label}", ["--prepare", "--use-installed", *names],
                    ["--prepare", "--use-installed", *names], tmp / "p", args.repeat)
            subprocess.run(OURS + ["--prepare", "--use-installed", *names, "-o", str(sd)], check=True)
            compare(f"build -f chroot {label}", ["--build", "-f", "chroot", str(sd)],
                    ["--build", "-f", "chroot", str(sd)], tmp / "app", args.repeat)
            booting = with_init(sd, tmp)
            ours_dir, up_dir = tmp / f"ext2-ours-{label[0]}", tmp / f"ext2-up-{label[0]}"
            sizes[label] = compare_ext2(label, booting, [], ours_dir, up_dir, args.repeat)
            sizes[label + " (boot modules)"] = compare_ext2(label, booting, ["--modules", "boot"],
                                                            tmp / "ext2-ours-mods", up_dir, args.repeat)
        many = many_files_appliance(tmp / "sd-bash+coreutils", tmp / "sd-many")
        compare("build -f chroot, base image of 100,000 one-byte files", ["--build", "-f", "chroot", str(many)],
                ["--build", "-f", "chroot", str(many)], tmp / "app-many", args.repeat)
        if args.only:
            return
        print("\n| ext2 output | ours | upstream |\n|---|---|---|")
        for label, ((o_root, o_initrd), (u_root, u_initrd)) in sizes.items():
            print(f"| root blocks in use, {label} | {o_root / 2**20:.0f} MiB | {u_root / 2**20:.0f} MiB |")
            print(f"| initrd size, {label} | {o_initrd / 2**20:.1f} MiB | {u_initrd / 2**20:.1f} MiB |")
        boot_case(tmp / "sd-bash+coreutils", tmp, args.repeat)
        run_case(tmp, args.repeat)
        resolve_case(tmp)


if __name__ == "__main__":
    main()
