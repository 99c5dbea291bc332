"""The native `supermin` command (launcher/main.rs): it answers a
`--build --if-newer` with nothing to do from the stamp's quick record,
without Python, and hands everything else to the Python command line.
`SUPERMIN_PYTHON=/nonexistent` shows which happened: a run that needed
Python fails with status 127."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCHER = Path(sys.executable).parent / "supermin"
NO_PYTHON = {**os.environ, "SUPERMIN_PYTHON": "/nonexistent"}


@pytest.fixture(scope="module", autouse=True)
def native():
    assert LAUNCHER.read_bytes()[:4] == b"\x7fELF", f"{LAUNCHER} is the native launcher"


def launch(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(LAUNCHER), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_a_no_op_is_answered_without_python_and_anything_else_goes_to_it(prepared, tmp_path):
    sd = tmp_path / "sd"
    shutil.copytree(prepared, sd)
    args = ["--build", "-f", "tar", "--if-newer", str(sd), "-o", "out"]
    first = launch(*args, cwd=tmp_path)
    assert first.returncode == 0 and (tmp_path / "out" / "root.tar").is_file(), first.stderr
    quick = launch(*args, cwd=tmp_path, env=NO_PYTHON)
    assert quick.returncode == 0, quick.stderr
    assert quick.stderr == "supermin: if-newer: output does not need rebuilding\n"
    # Each of these needs the full check: Python (here missing) is run.
    lock = tmp_path / "lock"
    for change, extra, env in [
        ("another argument", ["-v"], NO_PYTHON),
        ("another environment", [], {**NO_PYTHON, "SOURCE_DATE_EPOCH": "1"}),
        ("a lock someone holds", ["--lock", str(lock)], NO_PYTHON),
    ]:
        with open(lock, "w") as held:
            if "lock" in change:
                fcntl.lockf(held, fcntl.LOCK_EX)
            r = launch(*args, *extra, cwd=tmp_path, env=env)
        assert r.returncode == 127 and "cannot run /nonexistent" in r.stderr, (change, r.stderr)
    r = launch(*args, cwd=tmp_path / "out", env=NO_PYTHON)  # -o out is elsewhere
    assert r.returncode == 127, r.stderr
    # Spellings the launcher does not read itself go to Python.
    for spelled in (["--lock=" + str(lock)], ["--", str(sd)]):
        r = launch(*args, *spelled, cwd=tmp_path, env=NO_PYTHON)
        assert r.returncode == 127, (spelled, r.stderr)
    r = launch(*args[:-2], "-oout", cwd=tmp_path, env=NO_PYTHON)
    assert r.returncode == 127, r.stderr
    # OUT replaced by a symlink to it: the build would refuse it; so the
    # launcher does not answer.
    (tmp_path / "out").rename(tmp_path / "real")
    (tmp_path / "out").symlink_to("real")
    assert launch(*args, cwd=tmp_path, env=NO_PYTHON).returncode == 127
    (tmp_path / "out").unlink()
    (tmp_path / "real").rename(tmp_path / "out")
    # A touched input: Python decides (same bytes: nothing to build) and
    # records the new state; then it is quick again.
    os.utime(sd / "packages")
    assert launch(*args, cwd=tmp_path, env=NO_PYTHON).returncode == 127
    r = launch(*args, "-v", cwd=tmp_path)
    assert r.returncode == 0 and "does not need rebuilding" in r.stderr, r.stderr
    assert launch(*args, "-v", cwd=tmp_path, env=NO_PYTHON).returncode == 127, "-v: the full command"
    assert launch(*args, cwd=tmp_path).returncode == 0
    assert launch(*args, cwd=tmp_path, env=NO_PYTHON).returncode == 0
    # A lock no one holds is taken and the answer is quick.
    assert launch(*args, "--lock", str(lock), cwd=tmp_path).returncode == 0
    assert launch(*args, "--lock", str(lock), cwd=tmp_path, env=NO_PYTHON).returncode == 0
    # A missing output file is noticed without Python too.
    (tmp_path / "out" / "root.tar").unlink()
    assert launch(*args, cwd=tmp_path, env=NO_PYTHON).returncode == 127


def test_other_commands_run_python_without_the_working_directory_on_its_path(tmp_path):
    """A directory called `supermin` where the command runs (an appliance
    of that name) is not imported in place of the package."""
    hijack = tmp_path / "supermin"
    hijack.mkdir()
    (hijack / "__init__.py").write_text("raise SystemExit('imported from the working directory')\n")
    (hijack / "cli.py").write_text("raise SystemExit('imported from the working directory')\n")
    r = launch("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("supermin "), r.stdout + r.stderr
    r = launch("--build", "-f", "chroot", "--if-newer", "nothing-here", "-o", "x", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("supermin: "), r.stderr
