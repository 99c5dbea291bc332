"""`--if-newer` by content: the stamp a build leaves in its output (a file
in an output of named files, an extended attribute of a chroot) records
what it was made from, and the next `--if-newer` build says why it
rebuilds.  The package database is a copy under `--root`, edited as an
upgrade or an unrelated install would."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

import supermin

from conftest import SMALL, run_cli

STAMP = ".supermin-stamp"


@pytest.fixture(scope="module")
def copied_root(tmp_path_factory) -> Path:
    """A root of bash + coreutils built by this project (files as the
    host has them) with a copy of the host's dpkg database."""
    root = tmp_path_factory.mktemp("root") / "r"
    sd = root.parent / "sd-host"
    supermin.prepare(SMALL, sd)
    supermin.build([sd], root, format="chroot")
    shutil.copytree("/var/lib/dpkg", root / "var/lib/dpkg", dirs_exist_ok=True, symlinks=True)
    return root


@pytest.fixture()
def root(copied_root, tmp_path) -> Path:
    """This test's own copy of the database (the files are shared)."""
    status = copied_root / "var/lib/dpkg/status"
    saved = status.read_bytes()
    yield copied_root
    status.write_bytes(saved)


@pytest.fixture()
def sd(root, tmp_path) -> Path:
    out = tmp_path / "sd"
    supermin.prepare(SMALL, out, root=root)
    return out


def _set_version(root: Path, package: str, version: str) -> str:
    status = root / "var/lib/dpkg/status"
    text = status.read_text()
    stanza = re.search(rf"^Package: {re.escape(package)}\n(?:.+\n)*?Version: (.+)\n", text, re.M)
    assert stanza, package
    old = stanza.group(1)
    start, end = stanza.span(1)
    status.write_text(text[:start] + version + text[end:])
    return old


def test_a_version_change_inside_the_closure_rebuilds_and_names_the_package(root, sd, tmp_path):
    out = tmp_path / "out"
    first = supermin.build([sd], out, format="tar", root=root, if_newer=True)
    assert not first.skipped and first.rebuilt_because == ("output missing",)
    assert (out / STAMP).is_file() and supermin.BuildResult.from_output(out).format == "tar"
    again = supermin.build([sd], out, format="tar", root=root, if_newer=True)
    assert again.skipped and again.rebuilt_because == ()
    old = _set_version(root, "bash", "9.9-upgraded")
    r = run_cli("--build", "-f", "tar", "--root", str(root), "--if-newer", "-v", str(sd), "-o", str(out))
    assert f"if-newer: rebuilding {out}: bash {old} → 9.9-upgraded" in r.stderr, r.stderr
    assert supermin.build([sd], out, format="tar", root=root, if_newer=True).skipped


def test_a_package_installed_outside_the_closure_does_not_rebuild(root, sd, tmp_path):
    """A chroot (stamp in an attribute of OUT): an unrelated install
    changes the database file; the closure's versions are compared, the
    output is kept, and the stamp refreshed to the new database."""
    out = tmp_path / "chroot"
    supermin.build([sd], out, format="chroot", root=root, if_newer=True)
    assert b"supermin-stamp" not in b"".join(p.name.encode() for p in out.iterdir())
    (out / "marker").write_text("kept")
    with open(root / "var/lib/dpkg/status", "a") as f:
        f.write("\nPackage: unrelated-tool\nStatus: install ok installed\nPriority: optional\n"
                "Architecture: all\nVersion: 1.0\nDescription: not in the closure\n")
    r = supermin.build([sd], out, format="chroot", root=root, if_newer=True)
    assert r.skipped and (out / "marker").exists()
    before = os.getxattr(out, "user.supermin.stamp")
    assert supermin.build([sd], out, format="chroot", root=root, if_newer=True).skipped
    assert os.getxattr(out, "user.supermin.stamp") == before, "refreshed once, then left alone"
    _set_version(root, "coreutils", "0.1")
    r = supermin.build([sd], out, format="chroot", root=root, if_newer=True)
    assert not r.skipped and any(b.startswith("coreutils ") and b.endswith("→ 0.1") for b in r.rebuilt_because)
    assert not (out / "marker").exists()


def test_inputs_are_compared_by_content_and_named(root, sd, tmp_path):
    out = tmp_path / "out"
    supermin.build([sd], out, format="tar", root=root, if_newer=True)
    os.utime(sd / "packages")  # touched, same bytes
    assert supermin.build([sd], out, format="tar", root=root, if_newer=True).skipped
    (sd / "hostfiles").write_text("/etc/hostname\n")
    r = supermin.build([sd], out, format="tar", root=root, if_newer=True)
    assert r.rebuilt_because == (f"{sd}/hostfiles added",)
    with open(sd / "hostfiles", "a") as f:  # edited in place
        f.write("/etc/issue\n")
    r = supermin.build([sd], out, format="tar", root=root, if_newer=True)
    assert r.rebuilt_because == (f"{sd}/hostfiles changed",)
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        r = supermin.build([sd], out, format="tar", root=root, if_newer=True)
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    assert r.rebuilt_because == ("options changed",)


def test_a_foreign_or_damaged_stamp_rebuilds_and_none_falls_back_to_times(root, sd, tmp_path):
    out = tmp_path / "out"
    supermin.build([sd], out, format="tar", root=root, if_newer=True)
    stamp = out / STAMP
    text = stamp.read_text()
    stamp.write_text(re.sub(r"^made-by\t.*$", "made-by\t5.89.0 init-0", text, flags=re.M))
    r = supermin.build([sd], out, format="tar", root=root, if_newer=True)
    assert r.rebuilt_because[0].startswith("made by another supermin (5.89.0 init-0;"), r.rebuilt_because
    stamp.write_text(stamp.read_text()[:-4])  # without its "end" line
    r = supermin.build([sd], out, format="tar", root=root, if_newer=True)
    assert r.rebuilt_because == ("stamp unreadable (cut short)",)
    stamp.write_text(stamp.read_text()[:-20])  # cut inside a line
    r = supermin.build([sd], out, format="tar", root=root, if_newer=True)
    assert r.rebuilt_because[0].startswith("stamp unreadable ("), r.rebuilt_because
    # No stamp (upstream's output): upstream's rule, times.
    stamp.unlink()
    assert supermin.build([sd], out, format="tar", root=root, if_newer=True).skipped
    os.utime(sd / "packages")
    r = supermin.build([sd], out, format="tar", root=root, if_newer=True)
    assert r.rebuilt_because == ("no stamp, and an input or the package database is newer than the output",)
    # A chroot's attribute, damaged.
    chroot = tmp_path / "chroot"
    supermin.build([sd], chroot, format="chroot", root=root)
    os.setxattr(chroot, "user.supermin.stamp", b"\x28\xb5\x2f\xfd garbage")
    r = supermin.build([sd], chroot, format="chroot", root=root, if_newer=True)
    assert r.rebuilt_because[0].startswith("stamp unreadable"), r.rebuilt_because


def test_a_changed_kernel_rebuilds_and_says_so(sd, root, tmp_path, monkeypatch):
    """The kernel (SUPERMIN_KERNEL: a copy of the host's) is part of what
    an initramfs is made from: a new file of the same version rebuilds."""
    host_kernel = sorted(Path("/boot").glob("vmlinuz-*"))[-1]
    version = host_kernel.name.removeprefix("vmlinuz-")
    kernel = tmp_path / "vmlinuz"
    shutil.copy(host_kernel, kernel)
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "modules.dep").write_text("")
    monkeypatch.setenv("SUPERMIN_KERNEL", str(kernel))
    monkeypatch.setenv("SUPERMIN_MODULES", str(modules))
    out = tmp_path / "ram"
    args = dict(format="initramfs", root=root, if_newer=True, compression="none")
    supermin.build([sd], out, **args)
    assert supermin.build([sd], out, **args).skipped
    os.utime(kernel, (1_700_000_000, 1_700_000_000))
    r = supermin.build([sd], out, **args)
    assert r.rebuilt_because == (f"kernel {version} changed ({kernel})",), r.rebuilt_because
    # A module installed for the same kernel (depmod rewrites modules.dep).
    (modules / "modules.dep").write_text("kernel/extra/new.ko:\n")
    r = supermin.build([sd], out, **args)
    assert r.rebuilt_because == (f"kernel {version}'s modules changed",), r.rebuilt_because


def test_a_package_added_to_the_closure_rebuilds(root, sd, tmp_path):
    """A name --ignore-missing left out, installed later, is a change of
    the closure (as a new provider of a dependency would be), though no
    package of the old closure changed."""
    with open(sd / "packages", "a") as f:
        f.write("late-tool\n")
    out = tmp_path / "out"
    with pytest.warns(supermin.SuperminWarning, match="late-tool"):
        supermin.build([sd], out, format="tar", root=root, if_newer=True, ignore_missing=True)
    with open(root / "var/lib/dpkg/status", "a") as f:
        f.write("\nPackage: late-tool\nStatus: install ok installed\nPriority: optional\n"
                "Architecture: all\nVersion: 2.0\nDescription: installed after the build\n")
    (root / "var/lib/dpkg/info/late-tool.list").write_text("/.\n")
    try:
        r = supermin.build([sd], out, format="tar", root=root, if_newer=True, ignore_missing=True)
    finally:
        (root / "var/lib/dpkg/info/late-tool.list").unlink()
    assert r.rebuilt_because == ("late-tool 2.0 (all) added",), r.rebuilt_because


def test_a_command_line_that_is_not_text_still_builds(root, sd, tmp_path):
    """An argument with bytes that are not UTF-8 is not recorded for the
    launcher, and the build goes on."""
    odd = tmp_path / os.fsdecode(b"sd-\xff")
    shutil.copytree(sd, odd)
    r = run_cli("--build", "-f", "tar", "--root", str(root), "--if-newer", str(odd), "-o", str(tmp_path / "o"),
                check=False)
    assert r.returncode == 0, r.stderr
