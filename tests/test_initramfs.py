"""The `initramfs` format: OUT/kernel and OUT/initrd holding the whole
appliance, read back with GNU cpio, zstd and gzip, compared with the chroot
build of the same appliance, and booted in real qemu with no disk."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
import subprocess
import sys
from pathlib import Path

import pytest

import supermin

from supermin._boot import default_memory, unpacked_size

from conftest import BOOT_TIMEOUT, MARKER, cpio_names, run_cli

FRAME = {"dev", "dev/console", "init", "proc", "supermin-initramfs", "sys", "root"}


def unpack(initrd: Path, dest: Path) -> Path:
    """Unpack `initrd` (zstd, gzip or plain) with the standard tools, as
    root (device nodes and owners as archived); returns `dest`."""
    head = initrd.read_bytes()[:4]
    decompress = {b"\x28\xb5\x2f\xfd": ["zstd", "-dc"], b"\x1f\x8b\x08\x00": ["gzip", "-dc"]}.get(head)
    dest.mkdir()
    with open(initrd, "rb") as f:
        data = subprocess.run(decompress, stdin=f, capture_output=True, check=True).stdout if decompress else f.read()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=data, cwd=dest, check=True)
    return dest


def headers(archive: bytes) -> "list[dict]":
    """The entries of a newc archive, parsed here (not by our writer's
    code): name, ino, mode, uid, gid, nlink, mtime, size."""
    fields = ("ino", "mode", "uid", "gid", "nlink", "mtime", "size", "dev_major", "dev_minor",
              "rdev_major", "rdev_minor", "namesize", "check")
    entries, at = [], 0
    while True:
        assert archive[at:at + 6] == b"070701", at
        entry = {f: int(archive[at + 6 + 8 * i: at + 14 + 8 * i], 16) for i, f in enumerate(fields)}
        name_at = at + 110
        entry["name"] = archive[name_at: name_at + entry["namesize"] - 1].decode("utf-8", "surrogateescape")
        at = (name_at + entry["namesize"] + 3) & ~3
        at = (at + entry["size"] + 3) & ~3
        if entry["name"] == "TRAILER!!!":
            assert archive[at:].strip(b"\0") == b""
            return entries
        entries.append(entry)


def listing(initrd: Path) -> "list[str]":
    head = initrd.read_bytes()[:4]
    assert head == b"0707", "an uncompressed newc archive"
    return cpio_names(initrd)


@pytest.fixture(scope="module")
def plain(prepared, tmp_path_factory) -> supermin.BuildResult:
    out = tmp_path_factory.mktemp("initramfs") / "app"
    return supermin.build([prepared], out, format="initramfs", compression="none")


def test_the_archive_holds_the_chroot_tree_under_root(plain, built, tmp_path):
    """Every path of the chroot build is under /root, with its kind, mode,
    owner and bytes; names of one file share its inode; around it only the
    mini init, its marker, /dev/console and mount points."""
    assert sorted(os.listdir(plain.output)) == [".supermin-stamp", "initrd", "kernel"]
    assert plain.format == "initramfs" and plain.root is None and plain.kernel_version
    assert supermin.BuildResult.from_output(plain.output).format == "initramfs"
    names = listing(plain.initrd)
    assert len(names) == len(set(names))
    assert {n for n in names if not n.startswith("root/")} == FRAME
    unpacked = unpack(plain.initrd, tmp_path / "x")
    root = unpacked / "root"
    console = (unpacked / "dev/console").lstat()
    assert stat.S_ISCHR(console.st_mode) and os.major(console.st_rdev) == 5 and os.minor(console.st_rdev) == 1
    assert (unpacked / "init").read_bytes()[:4] == b"\x7fELF"

    def entries(top: Path) -> dict:
        found = {}
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                found[str(p.relative_to(top))] = p.lstat()
        return found

    ours, chroot = entries(root), entries(built)
    # No kernel modules by default: nothing beyond the chroot build.
    assert set(ours) == set(chroot)
    by_inode: dict = {}
    for path, st in chroot.items():
        mine = ours[path]
        assert stat.S_IFMT(mine.st_mode) == stat.S_IFMT(st.st_mode), path
        assert (mine.st_uid, mine.st_gid) == (st.st_uid, st.st_gid), path
        if not stat.S_ISLNK(st.st_mode):
            assert stat.S_IMODE(mine.st_mode) == stat.S_IMODE(st.st_mode), path
        else:
            # (The chroot format makes absolute targets relative.)
            def meaning(link: Path) -> str:
                return os.path.normpath(os.path.join("/", os.path.dirname(path), os.readlink(link)))
            assert meaning(root / path) == meaning(built / path), path
        if stat.S_ISREG(st.st_mode):
            assert (root / path).read_bytes() == (built / path).read_bytes(), path
            by_inode.setdefault((st.st_dev, st.st_ino), []).append(path)
    linked = [paths for paths in by_inode.values() if len(paths) > 1]
    for paths in linked:
        assert len({ours[p].st_ino for p in paths}) == 1, paths
    assert len(linked) > 0 or plain.hard_links == 0


def test_zstd_gzip_and_plain_hold_the_same_archive(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the build's own directories' times
    raw = supermin.build([prepared], tmp_path / "plain", format="initramfs", compression="none").initrd.read_bytes()
    for compression, magic, tool in (("zstd", b"\x28\xb5\x2f\xfd", "zstd"), ("gzip", b"\x1f\x8b", "gzip")):
        r = supermin.build([prepared], tmp_path / compression, format="cpio", compression=compression)
        packed = r.initrd.read_bytes()
        assert packed.startswith(magic) and len(packed) < len(raw) // 2, compression
        unpacked = subprocess.run([tool, "-dc"], input=packed, capture_output=True, check=True).stdout
        assert unpacked == raw, compression
        assert unpacked_size(r.initrd) == len(raw), "what boot() sizes the guest's memory by"


def test_default_compression_follows_the_kernel_config(prepared, plain, tmp_path):
    config = Path(f"/boot/config-{plain.kernel_version}")
    r = supermin.build([prepared], tmp_path / "auto", format="initramfs")
    wants_zstd = config.exists() and "CONFIG_RD_ZSTD=y" in config.read_text().splitlines()
    assert r.initrd.read_bytes()[:4] == (b"\x28\xb5\x2f\xfd" if wants_zstd else b"\x1f\x8b\x08\x00")


def test_same_epoch_gives_identical_initrd(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = supermin.build([prepared], tmp_path / "a", format="initramfs", compression="zstd")
    # Another process, with one CPU: zstd then runs one worker, not two.
    subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "supermin", "--build", "-f", "initramfs",
                    "--compression", "zstd", str(prepared), "-o", str(tmp_path / "b")], check=True)
    assert a.initrd.read_bytes() == (tmp_path / "b/initrd").read_bytes()
    raw = subprocess.run(["zstd", "-dc", a.initrd], capture_output=True, check=True).stdout
    entries = headers(raw)
    assert len(entries) > 1000 and max(e["mtime"] for e in entries) <= 1700000000


def test_modules_option_and_bad_compression(prepared, tmp_path):
    r = supermin.build([prepared], tmp_path / "fuse", format="initramfs", compression="none", modules=["fuse"])
    names = listing(r.initrd)
    assert any(n.endswith("/fuse.ko") for n in names) and any(n.endswith("/virtio_blk.ko") for n in names)
    assert not any(n.endswith("/i915.ko") for n in names)
    with pytest.raises(supermin.SuperminError, match="unknown initramfs compression.*zstd, gzip, none"):
        supermin.build([prepared], tmp_path / "bad", format="initramfs", compression="lz4")
    assert not (tmp_path / "bad").exists()
    res = run_cli("--build", "-f", "initramfs", "--compression", "lz4", str(prepared), "-o", str(tmp_path / "c"),
                  check=False)
    assert res.returncode != 0 and "lz4" in res.stderr


def test_boots_with_no_disk_and_runs_a_command(prepared, plain):
    out = plain.boot("echo hi; test -e /dev/vda || echo no-disk; cat /proc/cmdline; exit 3",
                     check=False, timeout=BOOT_TIMEOUT)
    lines = out.splitlines()
    assert lines[:2] == ["hi", "no-disk"] and "root=" not in lines[2], out
    with pytest.raises(supermin.BootError) as e:
        plain.boot("exit 4", timeout=BOOT_TIMEOUT)
    assert e.value.returncode == 4


def test_the_appliance_init_runs_from_the_initramfs(marker_appliance, tmp_path):
    """A base image's /init runs as in ext2; a file with two names is one
    inode inside the appliance; owners are the tarball's."""
    app = tmp_path / "linked.d"
    shutil.copytree(marker_appliance, app)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        one = tarfile.TarInfo("etc/one")
        one.size, one.mode = 5, 0o644
        tar.addfile(one, io.BytesIO(b"same\n"))
        other = tarfile.TarInfo("etc/other")
        other.type, other.linkname = tarfile.LNKTYPE, "etc/one"
        tar.addfile(other)
    (app / "zz-linked.tar.gz").write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    r = supermin.build([app], tmp_path / "app", format="initramfs", compression="gzip")
    console = r.boot(None, timeout=BOOT_TIMEOUT)
    assert MARKER in console and "user=0" in console, console[-2000:]
    out = r.boot("stat -c '%h %u:%g' /etc/one /etc/owned-by-1234; cat /etc/other", timeout=BOOT_TIMEOUT)
    assert out.splitlines() == ["2 0:0", "1 1234:5678", "same"], out


def test_qemu_loads_the_kernels_vmlinux_through_pvh(plain, tmp_path, monkeypatch):
    """boot() hands qemu the uncompressed kernel (made once into the cache,
    owner-only), which it enters through PVH; a kernel without one, or an
    unwritable cache, boots as it is."""
    from supermin._boot import qemu_command

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    argv = qemu_command(plain.kernel, plain.initrd, None, append="", accel="tcg")
    loaded = Path(argv[argv.index("-kernel") + 1])
    assert loaded.parent == tmp_path / "cache/supermin/kernels" and loaded.read_bytes()[:4] == b"\x7fELF"
    assert stat.S_IMODE(loaded.parent.stat().st_mode) == 0o700
    plain_argv = qemu_command(plain.kernel, plain.initrd, None, append="", accel="tcg", direct=False)
    assert plain_argv[plain_argv.index("-kernel") + 1] == str(plain.kernel)
    fake = tmp_path / "vmlinuz-fake"
    fake.write_bytes(b"\0" * 4096)
    argv = qemu_command(fake, plain.initrd, None, append="", accel="tcg")
    assert argv[argv.index("-kernel") + 1] == str(fake)
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-such-dir")
    argv = qemu_command(plain.kernel, plain.initrd, None, append="", accel="tcg")
    assert argv[argv.index("-kernel") + 1] == str(plain.kernel)


def test_the_kvm_verdict_is_kept_until_the_host_reboots(plain, tmp_path, monkeypatch):
    """Probing KVM can cost its whole timeout where /dev/kvm exists but
    guests hang: the verdict is kept on disk (keyed by boot id, kernel and
    qemu) so that the next process does not pay it again."""
    from supermin import _boot

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_boot, "_kvm_works", {})
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        assert _boot.kvm_usable(plain.kernel) is False
        assert not (tmp_path / "cache/supermin/kvm").exists(), "no probe, nothing to keep"
        return
    first = _boot.kvm_usable(plain.kernel)
    (verdict,) = (tmp_path / "cache/supermin/kvm").iterdir()
    assert verdict.read_bytes() == (b"1" if first else b"0")
    assert stat.S_IMODE(verdict.stat().st_mode) == 0o600
    verdict.write_bytes(b"0" if first else b"1")  # read back, not probed again
    monkeypatch.setattr(_boot, "_kvm_works", {})
    assert _boot.kvm_usable(plain.kernel) is (not first)


def test_the_guest_gets_memory_for_what_the_initramfs_unpacks_to(prepared, tmp_path):
    """A 700 MB file of zeros compresses to almost nothing: the guest's
    memory follows the archive's unpacked size (recorded in zstd's frame
    header), since the rootfs tmpfs may fill half of it."""
    app = tmp_path / "zeros.d"
    shutil.copytree(prepared, app)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("srv/zeros")
        info.size = 700 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    (app / "zz-zeros.tar.gz").write_bytes(buf.getvalue())
    r = supermin.build([app], tmp_path / "app", format="initramfs", compression="zstd")
    assert r.initrd.stat().st_size < 100 << 20
    assert unpacked_size(r.initrd) > 700 << 20
    assert default_memory(r.initrd, None) > 2 * 700
    assert r.boot("stat -c %s /srv/zeros", timeout=BOOT_TIMEOUT).strip() == str(700 << 20)
