"""Crash safety and hostile appliance inputs, on real builds: real
`kill -9`, real crafted tarballs, for both output formats."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import run_cli, tree


def _snapshot(out: Path) -> dict:
    return {p: v for p, v in tree(out).items()}


@pytest.mark.parametrize("fmt", ["chroot", "ext2"])
def test_sigkill_at_any_moment_keeps_the_previous_output(prepared, tmp_path, fmt):
    out = tmp_path / "app"
    extra = ["--modules", "boot", "--size", "300M"] if fmt == "ext2" else []
    run_cli("--build", "-f", fmt, *extra, str(prepared), "-o", str(out))
    before = _snapshot(out)
    root_bytes = (out / "root").read_bytes()[:1 << 20] if fmt == "ext2" else None
    killed = 0
    for delay in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6):
        proc = subprocess.Popen([sys.executable, "-m", "supermin", "--build", "-f", fmt, *extra, str(prepared),
                                 "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        assert _snapshot(out) == before, f"output changed after a kill at {delay}s"
        if root_bytes is not None:
            assert (out / "root").read_bytes()[:1 << 20] in (root_bytes, (out / "root").read_bytes()[:1 << 20])
    assert killed, "no build was still running when killed"
    # The next build cleans what the killed ones left.
    run_cli("--build", "-f", fmt, *extra, str(prepared), "-o", str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app"]


def _tarball(members) -> bytes:
    """A tar built entry by entry: (name, type, data_or_linkname, mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, payload, mode in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, mode
            if kind == tarfile.REGTYPE:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.linkname = payload
                tar.addfile(info)
    return buf.getvalue()


HOSTILE = {
    "dotdot": [("../../escaped-dotdot", tarfile.REGTYPE, b"x", 0o644)],
    "absolute": [("/tmp/escaped-absolute", tarfile.REGTYPE, b"x", 0o644)],
    "through-symlink": [("evil", tarfile.SYMTYPE, "/tmp", 0o777),
                        ("evil/escaped-through-symlink", tarfile.REGTYPE, b"x", 0o644)],
    "hardlink-outside": [("shadow-copy", tarfile.LNKTYPE, "/etc/shadow", 0o644)],
    "newline-name": [("etc/two\nlines", tarfile.REGTYPE, b"x", 0o644)],
    "invalid-utf8": [("etc/bad-\udcff-name", tarfile.REGTYPE, b"x", 0o644)],
    "deep-nesting": [("/".join(["d"] * 300) + "/deep", tarfile.REGTYPE, b"x", 0o644)],
}
# Harmless but odd names: a build must keep them, inside the output.
KEPT = {"newline-name": b"etc/two\nlines", "invalid-utf8": b"etc/bad-\xff-name",
        "deep-nesting": b"/".join([b"d"] * 300) + b"/deep"}


@pytest.mark.parametrize("fmt", ["chroot", "ext2"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tarballs_never_write_or_read_outside(prepared, tmp_path, fmt, case):
    appliance = tmp_path / "sd"
    appliance.mkdir()
    for f in prepared.iterdir():
        (appliance / f.name).write_bytes(f.read_bytes())
    (appliance / "zz-hostile.tar").write_bytes(_tarball(HOSTILE[case]))
    sentinels = [Path("/tmp/escaped-absolute"), Path("/tmp/escaped-through-symlink"),
                 tmp_path.parent / "escaped-dotdot", tmp_path / "escaped-dotdot"]
    for s in sentinels:
        s.unlink(missing_ok=True)
    out = tmp_path / "app"
    extra = ["--modules", "boot", "--size", "300M"] if fmt == "ext2" else []
    r = run_cli("--build", "-f", fmt, *extra, str(appliance), "-o", str(out), check=False)
    for s in sentinels:
        assert not s.exists(), f"{case}: wrote {s} outside the output"
    if r.returncode != 0:
        assert "zz-hostile.tar" in r.stderr, r.stderr  # the rejection names the input
        assert not out.exists()
        return
    if case in KEPT:
        assert r.returncode == 0, r.stderr
        if fmt == "chroot":
            assert os.path.exists(os.fsencode(out) + b"/" + KEPT[case]), case
        else:
            dump = tmp_path / "dump"
            dump.mkdir()
            top = KEPT[case].split(b"/")[0].decode()
            subprocess.run(["debugfs", "-R", f"rdump /{top} {dump}", str(out / "root")], check=True,
                           capture_output=True)
            assert os.path.exists(os.fsencode(dump) + b"/" + KEPT[case]), case
    shadow = Path("/etc/shadow").read_bytes()
    if fmt == "chroot":
        for p in out.rglob("*"):
            if p.is_file() and not p.is_symlink():
                assert p.read_bytes() != shadow or p == out / "etc/shadow", f"{case}: {p} copies /etc/shadow"
    else:
        listing = subprocess.run(["debugfs", "-R", "ls -p /", str(out / "root")], capture_output=True,
                                 text=True).stdout
        if "/shadow-copy/" in listing:
            dump = tmp_path / "dump"
            subprocess.run(["debugfs", "-R", f"dump /shadow-copy {dump}", str(out / "root")], check=True,
                           capture_output=True)
            assert dump.read_bytes() != shadow, f"{case}: the image holds a copy of /etc/shadow"


@pytest.fixture()
def small_filesystem(tmp_path):
    """A 120 MiB tmpfs (real ENOSPC), unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"this machine does not allow a tmpfs mount: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("fmt", ["chroot", "ext2"])
def test_disk_full_is_clear_and_keeps_the_previous_output(prepared, small_filesystem, fmt):
    out = small_filesystem / "app"
    extra = ["--modules", "boot", "--size", "200M"] if fmt == "ext2" else []
    run_cli("--build", "-f", "chroot", str(prepared), "-o", str(out))
    before = _snapshot(out)
    free = os.statvfs(small_filesystem).f_bavail * os.statvfs(small_filesystem).f_frsize
    subprocess.run(["fallocate", "-l", str(free - (8 << 20)), str(small_filesystem / "filler")], check=True)
    r = run_cli("--build", "-f", fmt, *extra, str(prepared), "-o", str(out), check=False)
    assert r.returncode == 1 and "No space left on device" in r.stderr, r.stderr
    assert _snapshot(out) == before
    assert sorted(p.name for p in small_filesystem.iterdir()) == ["app", "filler"]


def test_concurrent_builders_without_a_lock_never_mix_outputs(prepared, built, tmp_path):
    """Six builders on one output, no --lock: each swaps in a complete tree,
    so the result is always one whole appliance, and nothing is left over."""
    out = tmp_path / "app"
    procs = [subprocess.Popen([sys.executable, "-m", "supermin", "--build", "-f", "chroot", str(prepared),
                               "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert _snapshot(out) == _snapshot(built)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app"]


def test_builders_share_a_lock_with_debians_supermin(prepared, built, tmp_path, upstream):
    """Ours and Debian's supermin on the same --lock file and output: all
    succeed, one at a time, and the output is one tool's whole appliance."""
    out, lock = tmp_path / "app", tmp_path / "lock"
    cmds = []
    for i in range(4):
        tool = [sys.executable, "-m", "supermin"] if i % 2 == 0 else [upstream]
        cmds.append(tool + ["--build", "-f", "chroot", "--lock", str(lock), str(prepared), "-o", str(out)])
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in cmds]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    assert (out / "usr/bin/bash").is_file()
    r = subprocess.run(["chroot", str(out), "/bin/bash", "-c", "echo whole"], capture_output=True, text=True)
    assert r.stdout == "whole\n", r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "lock"]
