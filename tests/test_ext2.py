"""The ext2 format end to end: this host's kernel (scripts/setup.sh installs
linux-image-amd64), real mke2fs/e2fsck/debugfs, and boots in real qemu
(KVM when a guest really runs under it here, TCG otherwise), each bounded by
a timeout."""

from __future__ import annotations

import gzip
import io
import os
import pwd
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

import supermin
import supermin._boot
from supermin._boot import filesystem_uuid

from conftest import BOOT_TIMEOUT, MARKER, SMALL, add_tarball, cpio_names, run_as_nobody, run_cli, tree

@pytest.fixture(scope="session")
def ext2_app(marker_appliance, tmp_path_factory) -> supermin.BuildResult:
    """The marker appliance as ext2, all modules (upstream's default)."""
    out = tmp_path_factory.mktemp("ext2") / "app"
    return supermin.build([marker_appliance], out, format="ext2", include_packagelist=True)


def debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True).stdout


def inode_owner(image: Path, path: str) -> "tuple[int, int]":
    out = debugfs(image, f'stat "{path}"')
    m = re.search(r"User:\s*(\d+)\s+Group:\s*(\d+)", out)
    assert m, f"{path} not in {image}: {out}"
    return int(m.group(1)), int(m.group(2))


def e2fsck_clean(image: Path) -> None:
    r = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# -- booting ---------------------------------------------------------------


@pytest.mark.parametrize("root", ["/dev/vda", "uuid"])
def test_boots_to_the_appliance_init(ext2_app, root):
    console = ext2_app.boot(None, root=root, timeout=BOOT_TIMEOUT)
    assert f"{MARKER} kernel={ext2_app.kernel_version} user=0" in console, console[-3000:]


def test_python_build_and_boot_runs_a_command(tmp_path):
    r = supermin.build(SMALL, tmp_path / "app", format="ext2", modules=[], size="600M")
    assert r.kernel == tmp_path / "app" / "kernel" and r.root.stat().st_size == 600 << 20
    out = r.boot("uname -r; test -f /lib/modules/$(uname -r)/modules.dep && echo mods-ok; exit 3",
                 timeout=BOOT_TIMEOUT, check=False)
    assert out.splitlines() == [r.kernel_version, "mods-ok"], out
    with pytest.raises(supermin.BootError) as e:
        r.boot("false", timeout=BOOT_TIMEOUT, root="uuid")
    assert e.value.returncode == 1


# -- the image and the initrd ----------------------------------------------


def test_root_image_is_clean_and_holds_everything(ext2_app, marker_appliance):
    e2fsck_clean(ext2_app.root)
    assert ext2_app.root.stat().st_blocks * 512 < ext2_app.root.stat().st_size, "sparse"
    assert filesystem_uuid(ext2_app.root) == ext2_app.uuid
    listing = debugfs(ext2_app.root, "ls -p /usr/bin")
    assert "/bash/" in listing and "/ls/" in listing
    assert inode_owner(ext2_app.root, "/usr/bin/bash") == (0, 0)
    assert inode_owner(ext2_app.root, "/etc/owned-by-1234") == (1234, 5678)
    packagelist = debugfs(ext2_app.root, "cat /packagelist").split()
    assert any(p.startswith("bash_") for p in packagelist) and any(p.startswith("coreutils_") for p in packagelist)
    # Every module, as upstream (merged /usr: /lib is /usr/lib).
    version = ext2_app.kernel_version
    assert "/virtio_blk.ko/" in debugfs(ext2_app.root, f"ls -p /usr/lib/modules/{version}/kernel/drivers/block")
    assert "Inode:" in debugfs(ext2_app.root, f"stat /usr/lib/modules/{version}/modules.dep")
    host_modules = sum(1 for _ in Path(f"/lib/modules/{version}").rglob("*.ko*"))
    fsck = subprocess.run(["e2fsck", "-fn", str(ext2_app.root)], capture_output=True, text=True).stdout
    inodes = int(re.search(r"(\d+)/\d+ files", fsck).group(1))
    assert inodes > host_modules > 1000


def _resolved(path: str, target: str) -> str:
    """A symlink's target as an absolute, normalized appliance path."""
    return os.path.normpath(target if target.startswith("/") else os.path.join(os.path.dirname(path), target))


def test_image_contents_equal_a_chroot_build(marker_appliance, ext2_app, tmp_path):
    """Every path of a chroot build of the same appliance is in the image
    with the same type, mode, owner and bytes (symlinks: the same target;
    the chroot spells absolute ones relative)."""
    chroot = tmp_path / "chroot"
    supermin.build([marker_appliance], chroot, format="chroot", include_packagelist=True)
    dump = tmp_path / "dump"
    dump.mkdir()
    subprocess.run(["debugfs", "-R", f"rdump / {dump}", str(ext2_app.root)], check=True, capture_output=True)
    expected, actual = tree(chroot), tree(dump)
    skip = ("/usr/lib/modules", "/lost+found")
    actual = {p: v for p, v in actual.items() if not p.startswith(skip)}
    assert set(expected) == set(actual)
    for path, (kind, mode) in expected.items():
        # debugfs's rdump drops a directory's sticky bit (the image has it:
        # checked below).
        got_kind, got_mode = actual[path]
        assert (got_kind, got_mode) == (kind, mode if kind != "d" else mode & 0o777), path
        a, b = chroot / path[1:], dump / path[1:]
        if kind == "l":
            assert _resolved(path, os.readlink(a)) == _resolved(path, os.readlink(b)), path
        elif kind == "f":
            assert a.read_bytes() == b.read_bytes(), path
        if kind != "l":
            assert (a.lstat().st_uid, a.lstat().st_gid) == (b.lstat().st_uid, b.lstat().st_gid), path
    assert "Mode:  01777" in debugfs(ext2_app.root, "stat /tmp")


def test_initrd_holds_init_and_modules_in_load_order(ext2_app):
    names = cpio_names(ext2_app.initrd)
    assert {"init", "modules"} <= set(names) and names == sorted(names)
    modules = [n for n in names if n.endswith(".ko")]
    assert sorted(modules) == sorted(ext2_app.initrd_modules)
    order = ext2_app.initrd_modules
    assert order.index("virtio_ring.ko") < order.index("virtio_blk.ko")
    assert order.index("jbd2.ko") < order.index("ext4.ko")
    assert "virtio-gpu.ko" not in order
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["cpio", "-id", "--quiet"], input=ext2_app.initrd.read_bytes(), cwd=d, check=True)
        assert Path(d, "modules").read_text().split() == order
        elf = subprocess.run(["readelf", "-lW", f"{d}/init"], capture_output=True, text=True, check=True).stdout
        assert "INTERP" not in elf, "the mini init must be static"
        owners = subprocess.run(["cpio", "-itv", "--quiet", "--numeric-uid-gid"], input=ext2_app.initrd.read_bytes(),
                                capture_output=True, check=True).stdout.decode()
        assert all(line.split()[2:4] == ["0", "0"] for line in owners.splitlines()), owners


def test_boot_loads_the_root_disks_modules_first(ext2_app, tmp_path):
    """`/modules.vd` lists what finds a virtio disk and mounts it (with
    dependencies, in load order); boot() asks the mini init to load only
    those for root=/dev/vda, and all of `/modules` for root=UUID=.  An
    initrd whose short list lacks the disk's driver still boots: after
    two seconds the mini init loads the rest."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["cpio", "-id", "--quiet"], input=ext2_app.initrd.read_bytes(), cwd=d, check=True)
        short = Path(d, "modules.vd").read_text().split()
        order = Path(d, "modules").read_text().split()
        assert {"virtio_blk.ko", "virtio_pci.ko", "ext4.ko", "crc32c_generic.ko"} <= set(short)
        assert "ata_piix.ko" not in short and len(short) < len(order) // 2
        assert short == [m for m in order if m in short], "dependencies first, as in /modules"
        # Without its disk driver: the fallback must find the disk anyway.
        Path(d, "modules.vd").write_text("".join(f"{m}\n" for m in short if m != "virtio_blk.ko"))
        names = "\n".join(sorted(os.listdir(d))) + "\n"
        crippled = tmp_path / "initrd"
        with open(crippled, "wb") as out:
            subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=names.encode(), cwd=d, stdout=out,
                           check=True)
    fast = ext2_app.boot(None, timeout=BOOT_TIMEOUT)
    assert "loading module virtio_blk.ko" in fast and "loading module ata_piix.ko" not in fast, fast[-3000:]
    assert MARKER in fast
    full = ext2_app.boot(None, root="uuid", timeout=BOOT_TIMEOUT)
    assert "loading module ata_piix.ko" in full and MARKER in full, full[-3000:]
    slow = supermin._boot.boot(ext2_app.kernel, crippled, ext2_app.root, "echo found", timeout=BOOT_TIMEOUT)
    assert slow.strip() == "found", slow


def test_compressed_modules_are_decompressed_and_boot(marker_appliance, ext2_app, tmp_path):
    """A copy of this host's module tree with the boot modules compressed
    (xz, zstd and gzip in turn), used through SUPERMIN_MODULES."""
    version = ext2_app.kernel_version
    mods = tmp_path / "modules"
    subprocess.run(["cp", "-al", f"/lib/modules/{version}", str(mods)], check=True)
    dep = (mods / "modules.dep").read_text()
    tools = [("xz", ".xz"), ("zstd", ".zst"), ("gzip", ".gz")]
    renamed = {}
    for i, name in enumerate(ext2_app.initrd_modules):
        path = next(mods.rglob(name))
        tool, suffix = tools[i % 3]
        packed = subprocess.run([tool, "-q", "-c", str(path)], capture_output=True, check=True).stdout
        Path(str(path) + suffix).write_bytes(packed)
        path.unlink()  # only this tree's hard link
        rel = str(path.relative_to(mods))
        renamed[rel] = rel + suffix
    dep = re.sub(r"[^\s:]+\.ko", lambda m: renamed.get(m.group(0), m.group(0)), dep)
    (mods / "modules.dep").unlink()  # a hard link to the host's: never write through it
    (mods / "modules.dep").write_text(dep)
    env = dict(os.environ, SUPERMIN_KERNEL=str(ext2_app.kernel.resolve()), SUPERMIN_MODULES=str(mods))
    out = tmp_path / "app"
    run_cli("--build", "-f", "ext2", "--modules", "boot", "--size", "600M", str(marker_appliance), "-o", str(out),
            env=env)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["cpio", "-id", "--quiet"], input=(out / "initrd").read_bytes(), cwd=d, check=True)
        loaded = Path(d, "modules").read_text().split()
        assert loaded == ext2_app.initrd_modules
        for name in loaded:
            assert Path(d, name).read_bytes()[:4] == b"\x7fELF", f"{name} still compressed"
    app = supermin.BuildResult.from_output(out)
    assert app.format == "ext2" and app.uuid == filesystem_uuid(out / "root")
    console = app.boot(None, timeout=BOOT_TIMEOUT)
    assert MARKER in console, console[-3000:]


# -- reproducibility, caching, kernel handling -------------------------------


def test_same_epoch_and_seed_give_identical_initrd_and_root(marker_appliance, tmp_path):
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    outs = []
    for i in range(2):
        out = tmp_path / f"app{i}"
        run_cli("--build", "-f", "ext2", "--modules", "boot", "--size", "400M", "--uuid-seed", "seed",
                str(marker_appliance), "-o", str(out), env=env)
        outs.append(out)
        time.sleep(1.1)  # a different wall clock for the second build
    for name in ("initrd", "root"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), f"{name} differs"
    run_cli("--build", "-f", "ext2", "--modules", "boot", "--size", "400M", "--uuid-seed", "other",
            str(marker_appliance), "-o", str(tmp_path / "other"), env=env)
    assert filesystem_uuid(tmp_path / "other" / "root") != filesystem_uuid(outs[0] / "root")


def test_if_newer_checks_kernel_initrd_and_root(marker_appliance, tmp_path):
    out = tmp_path / "app"
    args = ["--build", "-f", "ext2", "--modules", "boot", "--size", "400M", "--if-newer", "--copy-kernel",
            str(marker_appliance), "-o", str(out)]
    run_cli(*args)
    assert (out / "kernel").is_file() and not (out / "kernel").is_symlink()
    assert time.time() - (out / "kernel").stat().st_mtime < 120, "a copied kernel gets a fresh mtime"
    before = {n: (out / n).stat().st_mtime_ns for n in ("kernel", "initrd", "root")}
    second = run_cli(*args, "-v")
    assert "if-newer: output does not need rebuilding" in second.stderr
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before
    os.utime(marker_appliance / "init.tar.gz")  # touched: the same bytes
    try:
        third = run_cli(*args, "-v")
    finally:
        os.utime(marker_appliance / "init.tar.gz", (1_600_000_000, 1_600_000_000))
    assert "if-newer: output does not need rebuilding" in third.stderr, "compared by content"
    (out / "initrd").unlink()
    fourth = run_cli(*args, "-v")
    assert f"if-newer: rebuilding {out}: output missing" in fourth.stderr, fourth.stderr
    assert (out / "root").stat().st_mtime_ns > before["root"]
    fifth = run_cli(*[a if a != "400M" else "500M" for a in args], "-v")
    assert f"if-newer: rebuilding {out}: options changed" in fifth.stderr, fifth.stderr


def test_verbose_says_which_kernel_and_why(marker_appliance, tmp_path):
    r = run_cli("--build", "-f", "ext2", "--modules", "boot", "--size", "400M", "-v",
                str(marker_appliance), "-o", str(tmp_path / "app"))
    assert "kernel: picked /boot/vmlinuz-" in r.stderr, r.stderr
    assert (tmp_path / "app" / "kernel").is_symlink()


# -- bad input ---------------------------------------------------------------


@pytest.fixture()
def good_ext2(marker_appliance, tmp_path) -> Path:
    out = tmp_path / "app"
    run_cli("--build", "-f", "ext2", "--modules", "boot", "--size", "400M", str(marker_appliance), "-o", str(out))
    return out


def snapshot(out: Path) -> dict:
    return {p.name: (p.lstat().st_mtime_ns, p.lstat().st_size) for p in out.iterdir()}


def test_size_too_small_is_clear_and_keeps_previous_output(marker_appliance, good_ext2):
    before = snapshot(good_ext2)
    r = run_cli("--build", "-f", "ext2", "--size", "30M", str(marker_appliance), "-o", str(good_ext2), check=False)
    assert r.returncode == 1
    assert "does not fit" in r.stderr and "--size" in r.stderr, r.stderr
    assert snapshot(good_ext2) == before
    assert sorted(p.name for p in good_ext2.parent.iterdir()) == ["app"], "no staging leftovers"


@pytest.mark.parametrize("size", ["12Q", "M", "-5M", "0"])
def test_malformed_size(marker_appliance, good_ext2, size):
    before = snapshot(good_ext2)
    r = run_cli("--build", "-f", "ext2", f"--size={size}", str(marker_appliance), "-o", str(good_ext2), check=False)
    assert r.returncode == 1 and "cannot parse size" in r.stderr, r.stderr
    assert snapshot(good_ext2) == before


def test_kernel_without_modules_names_the_directory(marker_appliance, good_ext2, tmp_path, monkeypatch):
    before = snapshot(good_ext2)
    empty = tmp_path / "no-modules"
    empty.mkdir()
    env = dict(os.environ, SUPERMIN_KERNEL=str((good_ext2 / "kernel").resolve()), SUPERMIN_MODULES=str(empty))
    r = run_cli("--build", "-f", "ext2", str(marker_appliance), "-o", str(good_ext2), check=False, env=env)
    assert r.returncode == 1 and str(empty) in r.stderr and "modules.dep" in r.stderr, r.stderr
    assert snapshot(good_ext2) == before
    monkeypatch.setenv("SUPERMIN_MODULES", str(empty))
    with pytest.raises(supermin.KernelError) as e:
        supermin.build([marker_appliance], good_ext2, format="ext2")
    # Only SUPERMIN_MODULES: /boot's kernel is rejected, and the reason says why.
    assert e.value.path is not None and f"{empty} has no modules.dep" in str(e.value)
    assert snapshot(good_ext2) == before


# -- non-root ----------------------------------------------------------------


@pytest.fixture(scope="session")
def nobody_appliance(marker_appliance, nobody_dir) -> Path:
    appliance = nobody_dir / "supermin.d"
    shutil.copytree(marker_appliance, appliance)
    for p in [appliance, *appliance.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return appliance


def test_non_root_build_gives_root_owned_files_and_tarball_owners(nobody_appliance, nobody_dir):
    appliance = nobody_appliance
    out = nobody_dir / "app"
    r = run_as_nobody(nobody_dir, "--build", "-f", "ext2", "--modules", "boot", "--size", "400M",
                      str(appliance), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "root").stat().st_uid == pwd.getpwnam("nobody").pw_uid
    e2fsck_clean(out / "root")
    assert inode_owner(out / "root", "/usr/bin/bash") == (0, 0)
    assert inode_owner(out / "root", "/usr/bin") == (0, 0)
    assert inode_owner(out / "root", "/etc/owned-by-1234") == (1234, 5678)
    assert inode_owner(out / "root", "/init") == (0, 0)


def test_unreadable_kernel_is_explained(nobody_appliance, nobody_dir, ext2_app):
    kernel = nobody_dir / "vmlinuz-0600"
    shutil.copy(ext2_app.kernel, kernel)
    os.chown(kernel, 0, 0)
    kernel.chmod(0o600)  # as Ubuntu installs /boot/vmlinuz-*
    r = run_as_nobody(nobody_dir, "--build", "-f", "ext2", str(nobody_appliance), "-o", str(nobody_dir / "x"),
                      env={"SUPERMIN_KERNEL": str(kernel)})
    assert r.returncode == 1
    assert "not readable by this user" in r.stderr and "SUPERMIN_KERNEL" in r.stderr, r.stderr
    assert not (nobody_dir / "x").exists()
