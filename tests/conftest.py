"""Shared fixtures: everything runs against this machine's real dpkg
database and files, and Debian's supermin 5.2.2 as the reference."""

from __future__ import annotations

import gzip
import io
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

import supermin

UPSTREAM = "/usr/bin/supermin"
SMALL = ["bash", "coreutils"]

# What each marker's tests (or the fixtures they use) do, found in their
# source: so that `-m "not qemu"` runs everywhere qemu is missing, and a
# new test is marked without anyone remembering to.  The default run runs
# everything.
_MARKERS = {
    "qemu": (".boot(", "qemu", "_boot("),
    "root": ("nobody_dir", "run_as_nobody", "chroot", "mount", "os.chown", "runuser"),
    "network": ("always_download", "--always-download", "use_installed=False", "dnf", "apt-get download"),
    "upstream": ("upstream", "run_upstream", "UPSTREAM"),
}


def pytest_collection_modifyitems(items):
    import inspect

    for item in items:
        function = getattr(item, "function", None)
        if function is None:
            continue
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        source += " ".join(getattr(item, "fixturenames", ()))
        for marker, needles in _MARKERS.items():
            if any(needle in source for needle in needles):
                item.add_marker(getattr(pytest.mark, marker))


def run_cli(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run this project's `supermin` command (as `python -m supermin`)."""
    proc = subprocess.run(
        [sys.executable, "-m", "supermin", *args], capture_output=True, text=True, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"supermin {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def run_upstream(*args: str) -> None:
    subprocess.run([UPSTREAM, *args], check=True, capture_output=True)


def tree(path: Path) -> dict:
    """path -> (type, mode) of every entry under `path`, as `find` sees it."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            kind = "l" if p.is_symlink() else "d" if p.is_dir() else "f"
            out["/" + str(p.relative_to(path))] = (kind, st.st_mode & 0o7777 if kind != "l" else 0o777)
    return out


@pytest.fixture(scope="session")
def backend() -> supermin.Backend:
    return supermin.Backend.detect()


@pytest.fixture(scope="session")
def upstream() -> str:
    assert shutil.which(UPSTREAM), "Debian's supermin is required (scripts/setup.sh installs it)"
    return UPSTREAM


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A supermin appliance of bash + coreutils (config files verified pristine)."""
    out = tmp_path_factory.mktemp("prepared") / "supermin.d"
    supermin.prepare(SMALL, out)
    return out


@pytest.fixture(scope="session")
def built(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "appliance"
    supermin.build([prepared], out, format="chroot")
    return out


@pytest.fixture(scope="session")
def nobody_dir():
    """A directory the `nobody` user can use, with a copy of the installed
    package, so that the system Python can import it as that user."""
    base = Path(tempfile.mkdtemp(prefix="supermin-nobody.", dir="/var/tmp"))
    shutil.copytree(Path(supermin.__file__).parent, base / "pkg" / "supermin")
    nobody = pwd.getpwnam("nobody")
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.chown(name, nobody.pw_uid, nobody.pw_gid)
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def run_as_nobody(nobody_dir: Path, *args: str, env: "dict | None" = None) -> subprocess.CompletedProcess:
    python = shutil.which("python3", path="/usr/bin") or "/usr/bin/python3"
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", "env", f"TMPDIR={nobody_dir}", f"PYTHONPATH={nobody_dir / 'pkg'}",
         *extra, python, "-m", "supermin", *args],
        capture_output=True, text=True, timeout=600,
    )


# --- Appliances that boot -----------------------------------------------

BOOT_TIMEOUT = 240
MARKER = "SUPERMIN-TEST-MARKER"


def cpio_names(initrd: Path) -> "list[str]":
    """The member names of an uncompressed cpio archive, by GNU cpio."""
    r = subprocess.run(["cpio", "-it", "--quiet"], input=initrd.read_bytes(), capture_output=True, check=True)
    return r.stdout.decode().splitlines()


def add_tarball(appliance: Path, name: str, members: dict) -> None:
    """Add a gzip'd tarball `name` to `appliance`: path -> (data, mode, uid, gid)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, (data, mode, uid, gid) in members.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    (appliance / name).write_bytes(gzip.compress(buf.getvalue(), mtime=0))


INIT_SCRIPT = f"""#!/bin/bash
echo "{MARKER} kernel=$(uname -r) user=$(id -u)"
""".encode()


@pytest.fixture(scope="session")
def marker_appliance(prepared, tmp_path_factory) -> Path:
    """bash + coreutils, plus a base image holding an /init that prints the
    marker and a file owned by 1234:5678."""
    out = tmp_path_factory.mktemp("marker") / "supermin.d"
    shutil.copytree(prepared, out)
    add_tarball(out, "init.tar.gz", {
        "init": (INIT_SCRIPT, 0o755, 0, 0),
        "etc/owned-by-1234": (b"x\n", 0o640, 1234, 5678),
    })
    return out
