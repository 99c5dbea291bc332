"""prepare against the real dpkg database, with Debian's supermin as the
reference for which config files belong in base.tar.gz."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import supermin
from conftest import SMALL, run_cli, run_upstream


def members(archive: Path) -> dict:
    with tarfile.open(archive) as t:
        return {"/" + m.name.lstrip("./"): m for m in t.getmembers()}


def test_packages_file_and_config_files_match_upstream(prepared, upstream, tmp_path):
    assert (prepared / "packages").read_text() == "bash\ncoreutils\n"
    run_upstream("--prepare", "--use-installed", *SMALL, "-o", str(tmp_path / "up"))
    ours = members(prepared / "base.tar.gz")
    theirs = members(tmp_path / "up" / "base.tar.gz")
    # Difference by design: upstream drops virtual packages, so it never
    # sees mawk (base-files Pre-Depends: awk); mawk ships no config file, so
    # the sets are equal here.
    assert set(ours) == set(theirs)
    # Byte-level names too: upstream's tar writes "./etc/...".
    assert sorted(m.name for m in ours.values()) == sorted(m.name for m in theirs.values())
    assert "/etc/bash.bashrc" in ours and "/etc/skel/.bashrc" in ours
    for m in ours.values():
        assert m.isreg() and (m.uid, m.gid) == (0, 0)


def test_config_files_are_the_hosts_pristine_bytes(prepared):
    with tarfile.open(prepared / "base.tar.gz") as t:
        data = t.extractfile("./etc/bash.bashrc").read()
    assert data == Path("/etc/bash.bashrc").read_bytes()


def test_two_prepares_are_byte_identical_and_clamped(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")
    supermin.prepare(SMALL, tmp_path / "a")
    supermin.prepare(SMALL, tmp_path / "b")
    a, b = (tmp_path / "a" / "base.tar.gz").read_bytes(), (tmp_path / "b" / "base.tar.gz").read_bytes()
    assert a == b
    assert a[4:8] == b"\0\0\0\0", "gzip header without a timestamp"
    assert all(m.mtime <= 1000000000 for m in members(tmp_path / "a" / "base.tar.gz").values())
    names = [m for m in members(tmp_path / "a" / "base.tar.gz")]
    assert names == sorted(names)


def test_use_installed_takes_host_files(tmp_path):
    app = supermin.prepare(SMALL, tmp_path / "sd", use_installed=True)
    assert app.packages == ["bash", "coreutils"]
    assert app.base_images == [tmp_path / "sd" / "base.tar.gz"]
    assert "/etc/skel/.profile" in members(tmp_path / "sd" / "base.tar.gz")


def test_downloaded_debs_give_pristine_files_not_local_edits(tmp_path):
    """A root whose /etc/bash.bashrc was edited: prepare must take the
    file from the downloaded .deb, not the edited copy (and --use-installed
    takes the edit)."""
    root = tmp_path / "root"
    shutil.copytree("/var/lib/dpkg", root / "var/lib/dpkg", symlinks=True)
    shutil.copytree("/etc", root / "etc", symlinks=True, ignore_dangling_symlinks=True)
    (root / "etc/bash.bashrc").write_text("# edited by the admin\n")
    supermin.prepare(["bash"], tmp_path / "pristine", root=root)
    supermin.prepare(["bash"], tmp_path / "edited", root=root, use_installed=True)
    with tarfile.open(tmp_path / "pristine" / "base.tar.gz") as t:
        pristine = t.extractfile("./etc/bash.bashrc").read()
    with tarfile.open(tmp_path / "edited" / "base.tar.gz") as t:
        edited = t.extractfile("./etc/bash.bashrc").read()
    assert edited == b"# edited by the admin\n"
    assert pristine != edited and b"System-wide .bashrc" in pristine


def test_always_download_fetches_debs(tmp_path):
    proc = run_cli("--prepare", "--always-download", "-v", "bash", "-o", str(tmp_path / "sd"))
    assert "dpkg: bash: 4 config files need the package file" in proc.stderr, proc.stderr
    assert "0 config files verified" in proc.stderr, proc.stderr
    assert "/etc/bash.bashrc" in members(tmp_path / "sd" / "base.tar.gz")


def test_unknown_package_is_an_error_and_keeps_previous_output(prepared, tmp_path):
    out = tmp_path / "sd"
    shutil.copytree(prepared, out)
    before = (out / "base.tar.gz").read_bytes()
    proc = run_cli("--prepare", "bash", "no-such-pkg", "-o", str(out), check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("supermin: ") and "'no-such-pkg'" in proc.stderr
    assert (out / "base.tar.gz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sd"], "no half-written output left"
    # Upstream's behaviour on request.
    run_cli("--prepare", "--ignore-missing", "bash", "no-such-pkg", "-o", str(out))
    assert (out / "packages").read_text() == "bash\n"


def test_cli_option_errors():
    for args, msg in [
        (["--prepare", "-f", "chroot", "bash", "-o", "/tmp/x"], "cannot use --prepare and --format"),
        (["--build", "x", "-o", "/tmp/x"], "must specify an output --format"),
        (["bash", "-o", "/tmp/x"], "--prepare or --build"),
        (["--prepare", "bash"], "-o option"),
        (["--dtb", "*.dtb"], "--dtb option was removed"),
        (["--names"], "supermin version 4"),
        (["--build", "-f", "ext3", "x", "-o", "/tmp/x"], "unknown --format"),
        (["--build", "-f", "chroot", "--size", "12Q", "x", "-o", "/tmp/x"], "cannot parse size"),
        (["--bogus"], "unrecognized arguments"),
    ]:
        proc = run_cli(*args, check=False)
        assert proc.returncode == 1, args
        assert proc.stderr.startswith("supermin: ") and msg in proc.stderr, (args, proc.stderr)


def test_version_and_drivers():
    assert run_cli("--version").stdout == f"supermin {supermin.__version__}\n"
    assert run_cli("-V").stdout.startswith("supermin 5.")
    assert "debian/dpkg\tdetected" in run_cli("--list-drivers").stdout.splitlines()
