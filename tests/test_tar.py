"""The `tar` format: OUT/root.tar, checked against GNU tar, Python's
tarfile and the chroot build of the same appliance."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import supermin

from conftest import run_as_nobody, run_cli


def _members(archive: Path) -> "list[tarfile.TarInfo]":
    with tarfile.open(archive) as tar:
        return tar.getmembers()


def test_the_archive_holds_what_the_chroot_holds(prepared, built, tmp_path):
    """Same paths, kinds, modes and owners as the chroot build (as root),
    in byte order, parents first, one entry per name; files' bytes equal."""
    out = tmp_path / "app"
    result = supermin.build([prepared], out, format="tar")
    archive = out / "root.tar"
    assert sorted(os.listdir(out)) == [".supermin-stamp", "root.tar"] and result.root == archive
    assert supermin.BuildResult.from_output(out).format == "tar"
    members = _members(archive)
    names = [m.name.rstrip("/") for m in members]
    assert names == sorted(names, key=os.fsencode) and len(names) == len(set(names))
    on_disk = {}
    for dirpath, dirnames, filenames in os.walk(built):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            on_disk[str(p.relative_to(built))] = p.lstat()
    assert set(names) == set(on_disk)
    kinds = {tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l", tarfile.REGTYPE: "f", tarfile.LNKTYPE: "f"}
    links = 0
    with tarfile.open(archive) as tar:
        for m in members:
            st = on_disk[m.name.rstrip("/")]
            kind = "l" if os.path.stat.S_ISLNK(st.st_mode) else "d" if os.path.stat.S_ISDIR(st.st_mode) else "f"
            assert kinds[m.type] == kind, m.name
            assert (m.uid, m.gid) == (st.st_uid, st.st_gid), m.name
            if kind != "l":
                assert m.mode == st.st_mode & 0o7777, m.name
            if m.type == tarfile.REGTYPE:
                assert tar.extractfile(m).read() == (built / m.name).read_bytes(), m.name
            if m.type == tarfile.LNKTYPE:
                links += 1
                assert os.path.samefile(built / m.name, built / m.linkname), m.name
    assert links == result.hard_links
    assert [m for m in members if m.name == "usr/bin/bash"][0].size > 100_000


def test_the_archive_unpacks_with_gnu_tar_and_runs(prepared, tmp_path):
    out = tmp_path / "app"
    supermin.build([prepared], out, format="tar")
    listing = subprocess.run(["tar", "-tvf", out / "root.tar"], capture_output=True, text=True, check=True)
    assert "usr/bin/bash" in listing.stdout
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xpf", out / "root.tar", "-C", unpacked], check=True)
    r = subprocess.run(["chroot", unpacked, "/bin/bash", "-c", "echo $((6*7)); ls /usr/bin/ls"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["42", "/usr/bin/ls"]


def test_the_archive_is_reproducible_and_clamped(prepared, tmp_path, monkeypatch):
    """With SOURCE_DATE_EPOCH, two builds give the same bytes, and no time
    is later than the epoch."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    for name in ("a", "b"):
        supermin.build([prepared], tmp_path / name, format="tar", include_packagelist=True)
    a, b = (tmp_path / n / "root.tar" for n in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    members = _members(a)
    assert max(m.mtime for m in members) <= 1_700_000_000
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert "packagelist" in [m.name for m in members]


def test_base_image_members_keep_their_owners_devices_and_long_names(prepared, tmp_path, nobody_dir):
    """A base image's owners, device nodes and a 450-byte path survive, even
    when a non-root user builds (the chroot format cannot keep them)."""
    long_name = "etc/" + "/".join(["d" * 60] * 4) + "/" + "n" * 200  # 450 bytes: GNU long names
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, extra in [*[("etc/" + "/".join(["d" * 60] * i), tarfile.DIRTYPE, None) for i in range(1, 5)],
                                  ("etc/owned", tarfile.REGTYPE, b"x"), ("dev/zz", tarfile.CHRTYPE, (1, 5)),
                                  (long_name, tarfile.REGTYPE, b"long"), ("etc/link", tarfile.LNKTYPE, "etc/owned")]:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = kind, 0o4755, 1234, 5678
            if kind == tarfile.REGTYPE:
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra))
            elif kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = extra
                tar.addfile(info)
            elif kind == tarfile.DIRTYPE:
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.linkname = extra
                tar.addfile(info)
    appliance = nobody_dir / "sd"
    appliance.mkdir()
    for f in prepared.iterdir():
        (appliance / f.name).write_bytes(f.read_bytes())
    (appliance / "zz-extra.tar").write_bytes(buf.getvalue())
    for p in [appliance, *appliance.iterdir()]:
        os.chown(p, 65534, 65534)
    out = nobody_dir / "app"
    r = run_as_nobody(nobody_dir, "--build", "-f", "tar", str(appliance), "-o", str(out))
    assert r.returncode == 0, r.stderr
    by_name = {m.name: m for m in _members(out / "root.tar")}
    # In name order, etc/link comes first: it holds the bytes, etc/owned
    # is the hard link.
    owned = by_name["etc/link"]
    assert (owned.uid, owned.gid, owned.mode, owned.size) == (1234, 5678, 0o4755, 1)
    assert by_name["dev/zz"].ischr() and (by_name["dev/zz"].devmajor, by_name["dev/zz"].devminor) == (1, 5)
    assert by_name[long_name].size == 4
    assert by_name["etc/owned"].islnk() and by_name["etc/owned"].linkname == "etc/link"
    assert by_name["usr/bin/bash"].uid == 0, "host files keep root's ownership"


def test_formats_come_from_one_registry():
    """The CLI's --help, its checks and `supermin.FORMATS` list the same
    names; an unknown one is refused before any work, naming them."""
    assert supermin.FORMATS == ("chroot", "ext2", "initramfs", "tar")
    help_text = run_cli("--help").stdout
    for name in supermin.FORMATS:
        assert f"{name}" in help_text
    r = run_cli("--build", "-f", "ext4", "x", "-o", "y", check=False)
    assert r.returncode == 1 and "chroot, ext2, initramfs, tar" in r.stderr, r.stderr
    try:
        supermin.build(["bash"], "/nonexistent/out", format="ext4")
    except supermin.SuperminError as e:
        assert "chroot, ext2, initramfs, tar" in str(e)
    else:
        raise AssertionError("format='ext4' accepted")
