"""The apk backend against a real Alpine 3.4 root (tests/data/apk, with its
provenance), with that root's own static apk-tools as the oracle for
packages, files, dependencies and version order."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import supermin
from conftest import run_cli

DATA = Path(__file__).parent / "data/apk/alpine-3.4-root"


@pytest.fixture
def alpine(tmp_path) -> Path:
    """A copy of the Alpine root (tests may damage it)."""
    root = tmp_path / "alpine"
    shutil.copytree(DATA, root, symlinks=True)
    return root


def apk(root: Path, *args: str) -> str:
    return subprocess.run([str(root / "sbin/apk.static"), "--root", str(root), *args],
                          check=True, capture_output=True, text=True).stdout


def test_detected_and_every_package_matches_apk_info(alpine):
    b = supermin.Backend.detect(root=str(alpine))
    assert b.name == "apk"
    oracle = set(apk(alpine, "info", "-v").split())
    assert {f"{p.name}-{p.version}" for p in b.packages()} == oracle
    assert len(oracle) == 16
    musl = b.package("musl")
    assert (musl.version, musl.arch, musl.full_name) == ("1.1.14-r14", "x86_64", "musl-1.1.14-r14.x86_64")


def test_files_match_apk_info_L(alpine):
    """apk info -L lists a package's files (R:); ours has its directories
    (F:) too, one per F: line of its record."""
    b = supermin.Backend.open("apk", root=str(alpine))
    records = (alpine / "lib/apk/db/installed").read_text().split("\n\n")
    for p in b.packages():
        oracle = {"/" + l for l in apk(alpine, "info", "-L", p.name).splitlines()[1:] if l}
        ours = {f.path for f in b.package(p.name).files}
        [record] = [r for r in records if f"\nP:{p.name}\n" in "\n" + r]
        dirs = sum(1 for line in record.splitlines() if line.startswith("F:"))
        assert oracle <= ours and len(ours - oracle) == dirs, p.name
    conf = {f.path for f in b.package("busybox").files if f.is_config}
    assert conf == {"/etc/securetty", "/etc/udhcpd.conf", "/etc/logrotate.d/acpid"}


def test_closures_follow_so_and_versioned_dependencies(alpine):
    """busybox needs so:libc.musl-x86_64.so.1, which musl provides;
    alpine-conf needs openrc>0.13; musl-utils' !uclibc-utils is a
    conflict, not a dependency.  apk info -R is the oracle for each
    package's direct dependencies, every one of them met in the closure."""
    b = supermin.Backend.open("apk", root=str(alpine))
    assert [p.name for p in b.resolve(["busybox"])] == ["busybox", "musl"]
    closure = b.resolve(["alpine-base"])
    names = {p.name for p in closure}
    assert len(names) == 16, names
    for p in closure:
        deps = apk(alpine, "info", "-R", p.name).split("\n", 1)[1].split()
        assert [d for d in deps if not d.startswith("!")] == p.depends, p.name


def test_chroot_from_the_alpine_root_runs_its_busybox_sh(alpine, tmp_path):
    sd = tmp_path / "sd"
    r = run_cli("--root", str(alpine), "--prepare", "busybox", "-v", "-o", str(sd))
    # The root's copies match the SHA-1s apk recorded: they are the pristine files.
    assert "3 config files verified" in r.stderr, r.stderr
    with tarfile.open(sd / "base.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["./etc/logrotate.d/acpid", "./etc/securetty", "./etc/udhcpd.conf"]
    out = tmp_path / "chroot"
    run_cli("--root", str(alpine), "--build", "-f", "chroot", "--include-packagelist", str(sd), "-o", str(out))
    ran = subprocess.run(["chroot", str(out), "/bin/sh", "-c", "echo from alpine; busybox cat /packagelist"],
                         capture_output=True, text=True, check=True).stdout
    assert ran == "from alpine\nbusybox-1.24.2-r12.x86_64\nmusl-1.1.14-r14.x86_64\n"


def test_an_edited_config_file_is_a_clear_error_and_use_installed_takes_it(alpine, tmp_path):
    (alpine / "etc/securetty").write_text("edited\n")
    r = run_cli("--root", str(alpine), "--prepare", "busybox", "-o", str(tmp_path / "sd"), check=False)
    assert r.returncode == 1 and "--use-installed" in r.stderr and "busybox" in r.stderr, r.stderr
    assert not (tmp_path / "sd").exists()
    run_cli("--root", str(alpine), "--prepare", "--use-installed", "busybox", "-o", str(tmp_path / "sd"))
    with tarfile.open(tmp_path / "sd/base.tar.gz") as tar:
        assert tar.extractfile("./etc/securetty").read() == b"edited\n"


@pytest.mark.parametrize("damage, message", [
    ("P:musl\nV:1\nF:../../etc\n", r"installed: line 3: directory .* leaves the root"),
    ("P:musl\nV:1\nF:lib\nR:../shadow\n", r"installed: line 4: file name .* is not a plain name"),
    ("P:../../x\nV:1\n", r"installed: line 1: invalid package name"),
    ("V:1\nA:x86_64\n", r"installed: line 1: a record with no P:"),
    ("P:musl\nV:1\nD:so:lib>=\n", r"installed: line 3: dependency"),
    ("\x00\x01binary", r"installed: line 1: .* is not a KEY:value line"),
])
def test_a_damaged_database_names_file_and_line_and_keeps_the_output(alpine, tmp_path, damage, message):
    sd, out = tmp_path / "sd", tmp_path / "out"
    run_cli("--root", str(alpine), "--prepare", "--use-installed", "busybox", "-o", str(sd))
    run_cli("--root", str(alpine), "--build", "-f", "chroot", str(sd), "-o", str(out))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    (alpine / "lib/apk/db/installed").write_text(damage)
    r = run_cli("--root", str(alpine), "--build", "-f", "chroot", str(sd), "-o", str(out), check=False)
    assert r.returncode == 1 and re.search(message, r.stderr), r.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
