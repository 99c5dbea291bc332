"""Crash safety and hostile appliance inputs, on real builds: real
`kill -9`, real crafted tarballs, for both output formats."""

from __future__ import annotations

import io
import os
import shutil
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
        inode = out.stat().st_ino
        proc = subprocess.Popen([sys.executable, "-m", "supermin", "--build", "-f", fmt, *extra, str(prepared),
                                 "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        assert _snapshot(out) == before, f"output changed after a kill at {delay}s"
        if root_bytes is not None:
            # A build that finished before the kill swapped in a new OUT
            # (a new directory, a new random UUID); otherwise the image
            # must be the very same bytes.
            if out.stat().st_ino == inode:
                assert (out / "root").read_bytes()[:1 << 20] == root_bytes, f"image changed at {delay}s"
            else:
                root_bytes = (out / "root").read_bytes()[:1 << 20]
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
            elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
                info.devmajor, info.devminor = payload
                tar.addfile(info)
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
    "device-through-symlink": [("evil", tarfile.SYMTYPE, "/tmp", 0o777),
                               ("evil/escaped-device", tarfile.CHRTYPE, (1, 3), 0o666)],
    "device-dotdot": [("../../escaped-dotdot", tarfile.FIFOTYPE, (0, 0), 0o644)],
    "device-under-new-dir-through-symlink": [("evil", tarfile.SYMTYPE, "/tmp", 0o777),
                                             ("evil/escaped-dir/fifo", tarfile.FIFOTYPE, (0, 0), 0o644)],
    "name-too-long": [("etc/" + "n" * 300, tarfile.REGTYPE, b"x", 0o644)],
    "symlink-target-too-long": [("etc/long-link", tarfile.SYMTYPE, "/" + "x/" * 3000, 0o777),
                                ("etc/after", tarfile.REGTYPE, b"after", 0o644)],
    "hardlink-to-directory": [("etc/d", tarfile.DIRTYPE, "", 0o755), ("etc/d2", tarfile.LNKTYPE, "etc/d", 0o644)],
    "newline-name": [("etc/two\nlines", tarfile.REGTYPE, b"x", 0o644)],
    "invalid-utf8": [("etc/bad-\udcff-name", tarfile.REGTYPE, b"x", 0o644)],
    "deep-nesting": [("/".join(["d"] * 300) + "/deep", tarfile.REGTYPE, b"x", 0o644)],
}
# No filesystem can hold these: the build must fail, naming the tarball
# (ext2 once truncated a 300-byte name silently, and wrote a 6,000-byte
# symlink target over the next block).
MUST_FAIL = {"name-too-long", "symlink-target-too-long", "hardlink-to-directory"}
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
    sentinels = [Path("/tmp/escaped-absolute"), Path("/tmp/escaped-through-symlink"), Path("/tmp/escaped-device"),
                 Path("/tmp/escaped-dir"),
                 tmp_path.parent / "escaped-dotdot", tmp_path / "escaped-dotdot"]
    for s in sentinels:
        if s.is_dir() and not s.is_symlink():
            shutil.rmtree(s)
        else:
            s.unlink(missing_ok=True)
    out = tmp_path / "app"
    extra = ["--modules", "boot", "--size", "300M"] if fmt == "ext2" else []
    r = run_cli("--build", "-f", fmt, *extra, str(appliance), "-o", str(out), check=False)
    for s in sentinels:
        assert not s.exists(), f"{case}: wrote {s} outside the output"
    if case in MUST_FAIL:
        assert r.returncode == 1, f"{case}: built"
    if case in KEPT:
        assert r.returncode == 0, r.stderr
    if r.returncode != 0:
        assert "zz-hostile.tar" in r.stderr, r.stderr  # the rejection names the input
        assert not out.exists()
        return
    if case in KEPT:
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


# --- Device nodes, FIFOs and huge or sparse members in base images -------

NODES = [("dev/null2", tarfile.CHRTYPE, (1, 3), 0o666), ("dev/loop9", tarfile.BLKTYPE, (7, 9), 0o660),
         ("run/fifo", tarfile.FIFOTYPE, (0, 0), 0o620)]


def _appliance_with(prepared: Path, dest: Path, name: str, data: bytes) -> Path:
    """A copy of `prepared` plus one extra input file, readable by anyone."""
    dest.mkdir()
    for f in prepared.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    (dest / name).write_bytes(data)
    for p in [dest, *dest.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def _debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, text=True,
                          check=True).stdout


def _ext2_node(image: Path, path: str) -> "tuple[str, str, str]":
    """(type, octal permissions, "major:minor") of an inode in an ext2 image."""
    out = _debugfs(image, f"stat {path}")
    kind = out.split("Type: ", 1)[1].split("    ")[0].strip()
    mode = out.split("Mode:", 1)[1].split()[0]
    dev = out.split("Device major/minor number: ", 1)[1].split()[0] if "major/minor" in out else ""
    return kind, mode, dev


@pytest.mark.parametrize("fmt", ["chroot", "ext2"])
def test_device_nodes_and_fifos_in_base_images_are_made_as_root(prepared, tmp_path, fmt):
    """The tar crate alone would write them as empty regular files."""
    appliance = _appliance_with(prepared, tmp_path / "sd", "zz-dev.tar", _tarball(NODES))
    out = tmp_path / "app"
    extra = ["--modules", "boot", "--size", "300M"] if fmt == "ext2" else []
    r = run_cli("--build", "-f", fmt, *extra, str(appliance), "-o", str(out))
    assert "device nodes" not in r.stderr
    if fmt == "chroot":
        import stat
        st = os.lstat(out / "dev/null2")
        assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
        assert st.st_mode & 0o7777 == 0o666, "modes are the tarball's, not umask-reduced"
        st = os.lstat(out / "dev/loop9")
        assert stat.S_ISBLK(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (7, 9)
        assert stat.S_ISFIFO(os.lstat(out / "run/fifo").st_mode)
    else:
        assert _ext2_node(out / "root", "/dev/null2") == ("character special", "0666", "01:03")
        assert _ext2_node(out / "root", "/dev/loop9") == ("block special", "0660", "07:09")
        assert _ext2_node(out / "root", "/run/fifo")[:2] == ("FIFO", "0620")


@pytest.mark.parametrize("fmt", ["chroot", "ext2"])
def test_device_nodes_without_root(prepared, nobody_dir, fmt):
    """chroot: making a device node needs root, so each is skipped and
    named (tarball and entry) in one warning; FIFOs are still made.  ext2:
    the image is written in-process, so the nodes are kept exactly."""
    import stat
    from conftest import run_as_nobody
    appliance = _appliance_with(prepared, nobody_dir / f"dev-sd-{fmt}", "zz-dev.tar", _tarball(NODES))
    out = nobody_dir / f"dev-app-{fmt}"
    extra = ["--modules", "boot", "--size", "300M"] if fmt == "ext2" else []
    r = run_as_nobody(nobody_dir, "--build", "-f", fmt, *extra, str(appliance), "-o", str(out))
    assert r.returncode == 0, r.stderr
    if fmt == "chroot":
        warnings = [l for l in r.stderr.splitlines() if "device nodes in base images were skipped" in l]
        assert len(warnings) == 1, r.stderr
        assert f"{appliance}/zz-dev.tar: dev/null2" in warnings[0]
        assert f"{appliance}/zz-dev.tar: dev/loop9" in warnings[0]
        assert not os.path.lexists(out / "dev/null2") and not os.path.lexists(out / "dev/loop9")
        assert stat.S_ISFIFO(os.lstat(out / "run/fifo").st_mode)
        assert (out / "usr/bin/bash").stat().st_size > 0
    else:
        assert "device nodes" not in r.stderr
        assert _ext2_node(out / "root", "/dev/null2") == ("character special", "0666", "01:03")
        assert _ext2_node(out / "root", "/dev/loop9") == ("block special", "0660", "07:09")


@pytest.fixture(scope="module")
def sparse_tarball(tmp_path_factory) -> Path:
    """A GNU tar (real `tar --sparse`) of a 512 MiB file that is all hole
    but for a head and a tail: the archive is a few KiB."""
    d = tmp_path_factory.mktemp("sparse")
    (d / "srv").mkdir()
    big = d / "srv/disk.img"
    with open(big, "wb") as f:
        f.write(b"head")
        f.seek((512 << 20) - 4)
        f.write(b"tail")
    out = d / "sparse.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-C", str(d), "-cf", str(out), "srv/disk.img"], check=True)
    assert out.stat().st_size < 64 << 10
    return out


def _max_rss_mib(*args: str) -> "tuple[subprocess.CompletedProcess, float]":
    """Run the CLI in a child of a fresh Python; the peak RSS of that tree."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stderr.write(r.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
             "sys.exit(r.returncode)")
    r = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "supermin", *args],
                       capture_output=True, text=True)
    return r, int(r.stdout.split()[-1]) / 1024 if r.stdout.split() else 0.0


def test_sparse_member_stays_sparse_in_a_chroot(prepared, tmp_path, sparse_tarball):
    appliance = _appliance_with(prepared, tmp_path / "sd", "zz-sparse.tar", sparse_tarball.read_bytes())
    out = tmp_path / "app"
    run_cli("--build", "-f", "chroot", str(appliance), "-o", str(out))
    img = out / "srv/disk.img"
    assert img.stat().st_size == 512 << 20
    assert img.stat().st_blocks * 512 < 1 << 20, "holes were filled"
    with open(img, "rb") as f:
        assert f.read(4) == b"head"
        f.seek((512 << 20) - 4)
        assert f.read() == b"tail"


def test_huge_member_in_ext2_is_bounded_by_the_image_not_memory(prepared, tmp_path, sparse_tarball):
    """512 MiB of member data: refused before reading when it cannot fit
    the image (naming tarball, entry and --size; previous output intact),
    otherwise streamed through the staging directory, never held in memory."""
    appliance = _appliance_with(prepared, tmp_path / "sd", "zz-sparse.tar", sparse_tarball.read_bytes())
    out = tmp_path / "app"
    run_cli("--build", "-f", "ext2", "--modules", "boot", "--size", "300M", str(prepared), "-o", str(out))
    before = _snapshot(out)
    r = run_cli("--build", "-f", "ext2", "--modules", "boot", "--size", "300M", str(appliance), "-o", str(out),
                check=False)
    assert r.returncode == 1
    assert "zz-sparse.tar" in r.stderr and "/srv/disk.img" in r.stderr and "--size" in r.stderr, r.stderr
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "sd"]

    r, rss = _max_rss_mib("--build", "-f", "ext2", "--modules", "boot", "--size", "800M", str(appliance),
                          "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert rss < 256, f"peak RSS {rss:.0f} MiB: the member was held in memory"
    assert sorted(p.name for p in out.iterdir()) == [".supermin-stamp", "initrd", "kernel", "root"], "spilled data"
    dump = tmp_path / "disk.img"
    _debugfs(out / "root", f"dump /srv/disk.img {dump}")
    assert dump.stat().st_size == 512 << 20
    with open(dump, "rb") as f:
        assert f.read(4) == b"head"
        f.seek((512 << 20) - 4)
        assert f.read() == b"tail"


def test_member_claiming_more_than_it_holds_is_named(prepared, tmp_path):
    """A header that claims 100 GiB and a tarball that ends: a clear error
    naming the input, before anything large is allocated or written."""
    info = tarfile.TarInfo("etc/huge")
    info.size = 100 << 30
    data = info.tobuf(format=tarfile.GNU_FORMAT) + b"x" * 512 + b"\0" * 1024
    appliance = _appliance_with(prepared, tmp_path / "sd", "zz-claims.tar", data)
    for fmt, extra in [("chroot", []), ("ext2", ["--modules", "boot", "--size", "300M"])]:
        out = tmp_path / f"app-{fmt}"
        r = run_cli("--build", "-f", fmt, *extra, str(appliance), "-o", str(out), check=False)
        assert r.returncode == 1 and "zz-claims.tar" in r.stderr, r.stderr
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sd"]


# --- hostfiles that match secrets this user cannot read ------------------

@pytest.mark.parametrize("fmt", ["chroot", "ext2"])
def test_non_root_hostfiles_matching_secrets_are_skipped_and_reported(prepared, nobody_dir, fmt):
    secrets = nobody_dir / f"secrets-{fmt}"
    (secrets / "private").mkdir(parents=True)
    secrets.chmod(0o755)
    (secrets / "private").chmod(0o700)
    (secrets / "private/key").write_text("private key")
    (secrets / "key-root").write_text("root only")
    (secrets / "key-root").chmod(0o600)
    (secrets / "key-public").write_text("public")
    (secrets / "key-public").chmod(0o644)
    hostfiles = f"/etc/shadow\n/etc/gshadow\n{secrets}/key-*\n{secrets}/private/*\n"
    appliance = _appliance_with(prepared, nobody_dir / f"secrets-sd-{fmt}", "hostfiles", hostfiles.encode())
    from conftest import run_as_nobody
    out = nobody_dir / f"secrets-app-{fmt}"
    extra = ["--modules", "boot", "--size", "300M"] if fmt == "ext2" else []
    r = run_as_nobody(nobody_dir, "--build", "-f", fmt, *extra, str(appliance), "-o", str(out))
    assert r.returncode == 0, r.stderr
    warnings = [l for l in r.stderr.splitlines() if "unreadable by this user" in l]
    assert len(warnings) == 1, r.stderr
    for secret in ["/etc/shadow", "/etc/gshadow", f"{secrets}/key-root"]:
        assert secret in warnings[0], warnings[0]
    rel = str(secrets).lstrip("/")
    if fmt == "chroot":
        present = {p for p in ["etc/shadow", "etc/gshadow", f"{rel}/key-root", f"{rel}/private/key"]
                   if os.path.lexists(out / p)}
        assert not present, f"copied (perhaps empty): {present}"
        assert (out / rel / "key-public").read_text() == "public"
    else:
        listing = _debugfs(out / "root", f"ls -l /{rel}") + _debugfs(out / "root", "ls -l /etc")
        for name in [" shadow", " gshadow", "key-root", " key\n"]:
            assert name not in listing, listing
        assert "key-public" in listing


# --- Hostile package data ------------------------------------------------

def _dpkg_root(base: Path, status: str, lists: "dict[str, str]") -> Path:
    """A root with a dpkg database of our own: `status` and `.list` files."""
    info = base / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (base / "var/lib/dpkg/status").write_text(status)
    (base / "etc").mkdir()
    (base / "etc/debian_version").write_text("12.0\n")
    for name, text in lists.items():
        (info / f"{name}.list").write_text(text)
    return base


EVIL = "Package: evil\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n\n"


def test_a_file_list_naming_paths_outside_the_root_is_refused(tmp_path):
    """`.list` lines are joined under the root (to read) and under the
    output (to write): `..` would leave both."""
    sentinel = tmp_path / "escaped-list"
    root = _dpkg_root(tmp_path / "root", EVIL, {"evil": "/.\n/usr\n/usr/../../escaped-list\n"})
    (root / "usr").mkdir()
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "packages").write_text("evil\n")
    out = tmp_path / "a" / "b" / "app"
    out.parent.mkdir(parents=True)
    r = run_cli("--build", "-f", "chroot", "--root", str(root), str(sd), "-o", str(out), check=False)
    assert r.returncode == 1
    assert "evil.list: line 3" in r.stderr and "/usr/../../escaped-list" in r.stderr, r.stderr
    assert not sentinel.exists() and not (tmp_path / "a/escaped-list").exists() and not out.exists()
    import supermin
    backend = supermin.Backend.open("dpkg", root=str(root))
    with pytest.raises(supermin.BackendError, match="evil.list: line 3"):
        backend.package("evil").files


@pytest.mark.parametrize("stanza, says", [
    ("Package: b\nStatus: install ok installed\nArchitecture: amd64\n", "package b has no Version field"),
    ("Package: ../../../tmp/x\nStatus: install ok installed\nVersion: 1\n", "invalid package name"),
    ("Status: install ok installed\nVersion: 1\nDepends: evil\n", "no Package field"),
])
def test_a_broken_status_stanza_is_named_by_line(tmp_path, stanza, says):
    """dpkg refuses such a database; resolving around the broken entry
    would quietly give a different closure."""
    import supermin
    root = _dpkg_root(tmp_path / "root", EVIL + stanza, {"evil": "/.\n"})
    with pytest.raises(supermin.BackendError) as e:
        supermin.Backend.open("dpkg", root=str(root))
    assert f"{root}/var/lib/dpkg/status: line 6: broken entry" in str(e.value) and says in str(e.value)
    r = run_cli("--prepare", "--root", str(root), "evil", "-o", str(tmp_path / "sd"), check=False)
    assert r.returncode == 1 and "status: line 6" in r.stderr, r.stderr
    assert not (tmp_path / "sd").exists()


@pytest.mark.parametrize("junk", [
    b"kernel/drivers/block/virtio_blk.ko: ../../../../etc/shadow.ko\n",
    b"kernel/drivers/block/virtio_blk.ko:\nthis line is junk\n",
    b"\x7fELF\x02\x01\x01\x00\xff\xfe garbage",
])
def test_junk_in_modules_dep_is_a_clear_kernel_error(prepared, tmp_path, junk):
    mods = tmp_path / "modules"
    mods.mkdir()
    (mods / "modules.dep").write_bytes(junk)
    out = tmp_path / "app"
    run_cli("--build", "-f", "chroot", str(prepared), "-o", str(out))
    before = _snapshot(out)
    kernel = sorted(Path("/boot").glob("vmlinuz-*"))[-1]
    env = dict(os.environ, SUPERMIN_KERNEL=str(kernel), SUPERMIN_MODULES=str(mods))
    r = run_cli("--build", "-f", "ext2", "--modules", "boot", "--size", "300M", str(prepared), "-o", str(out),
                check=False, env=env)
    assert r.returncode == 1 and f"{mods}/modules.dep" in r.stderr, r.stderr
    assert "panick" not in r.stderr and "Traceback" not in r.stderr
    assert _snapshot(out) == before


def test_hostfiles_cannot_lead_outside_the_output(prepared, tmp_path):
    """Matches are written at their own path under the output, so a `..`
    pattern is refused (naming the file and line), and `.*` never yields
    a directory's `.` or `..` entries."""
    (tmp_path / "dots").mkdir()
    (tmp_path / "dots/.hidden").write_text("kept")
    out = tmp_path / "deep" / "app"
    out.parent.mkdir()
    for hostfiles, ok in [(f"{tmp_path}/dots/.*\n", True), (f"/etc/hostname\n/tmp/../../etc/passwd\n", False)]:
        sd = _appliance_with(prepared, tmp_path / f"sd-{ok}", "hostfiles", hostfiles.encode())
        r = run_cli("--build", "-f", "chroot", str(sd), "-o", str(out), check=False)
        if ok:
            assert r.returncode == 0, r.stderr
            assert (out / str(tmp_path).lstrip("/") / "dots/.hidden").read_text() == "kept"
        else:
            assert r.returncode == 1 and f"{sd}/hostfiles: line 2:" in r.stderr and "'..'" in r.stderr, r.stderr
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["app"]
    assert not (tmp_path / "etc").exists()


def test_truncated_or_corrupt_debs_are_backend_errors_naming_the_file(tmp_path):
    """Cut a real .deb (made by dpkg-deb) at every kind of boundary, and
    flip bytes inside its compressed members: always a BackendError naming
    the file, never another exception (nor a panic)."""
    import supermin
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text("Package: cut\nVersion: 1\nArchitecture: all\nMaintainer: t <t@e.org>\n"
                                         "Description: t\n")
    (tree / "usr/share/cut").mkdir(parents=True)
    (tree / "usr/share/cut/data").write_bytes(os.urandom(200_000))  # incompressible: a long data member
    good = tmp_path / "cut.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(good)], check=True,
                   capture_output=True)
    data = good.read_bytes()
    assert supermin.Package.from_file(str(good)).name == "cut"
    data_member = data.index(b"data.tar.xz")
    variants = {f"cut-at-{n}": data[:n] for n in (8, 30, 70, 140, data_member + 30, data_member + 5000,
                                                   len(data) - 100)}
    for offset in (data_member + 60 + 100, data_member + 60 + 100_000):  # inside the xz stream
        flipped = bytearray(data)
        flipped[offset:offset + 16] = bytes(b ^ 0xFF for b in flipped[offset:offset + 16])
        variants[f"flipped-at-{offset}"] = bytes(flipped)
    for name, payload in variants.items():
        path = tmp_path / f"{name}.deb"
        path.write_bytes(payload)
        with pytest.raises(supermin.BackendError) as e:
            supermin.Package.from_file(str(path))
        assert str(path) in str(e.value), (name, str(e.value))


@pytest.mark.parametrize("fmt", ["chroot", "ext2"])
def test_a_corrupt_compressed_base_image_is_caught_by_its_checksum(prepared, tmp_path, fmt):
    """Bytes flipped inside the stored data of a gzip base image leave a
    well-formed tar with wrong file contents; only gzip's CRC, at the very
    end of the stream, tells.  upstream's `tar -z` reads it; so do we."""
    import gzip
    payload = os.urandom(300_000)  # incompressible: deflate stores it, so a flip only changes contents
    gz = bytearray(gzip.compress(_tarball([("srv/blob", tarfile.REGTYPE, payload, 0o644)]), mtime=0))
    gz[150_000:150_008] = bytes(b ^ 0xFF for b in gz[150_000:150_008])
    appliance = _appliance_with(prepared, tmp_path / "sd", "zz-blob.tar.gz", bytes(gz))
    out = tmp_path / "app"
    extra = ["--modules", "boot", "--size", "300M"] if fmt == "ext2" else []
    r = run_cli("--build", "-f", fmt, *extra, str(appliance), "-o", str(out), check=False)
    assert r.returncode == 1 and "zz-blob.tar.gz" in r.stderr and "corrupt" in r.stderr, r.stderr
    assert not out.exists()


def test_scratch_directories_of_killed_runs_are_removed_by_the_next_run(tmp_path):
    """prepare downloads into a scratch directory under $TMPDIR; one left by
    `kill -9` is removed by the next run, while a live one (locked) and
    upstream's (`supermin*.tmpdir`) are left alone."""
    import fcntl
    scratch_base = tmp_path / "tmp"
    scratch_base.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch_base))
    left = []
    for delay in (0.3, 0.6, 1.0):
        proc = subprocess.Popen([sys.executable, "-m", "supermin", "--prepare", "--always-download", "bash",
                                 "-o", str(tmp_path / "sd")], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = [p.name for p in scratch_base.iterdir()]
        if left:
            break
    assert left, "no prepare was killed while it had a scratch directory"
    live = scratch_base / "supermin.Live1234"
    live.mkdir()
    holder = os.open(live, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    upstreams = scratch_base / "supermin4f2a1c.tmpdir"
    upstreams.mkdir()
    r = run_cli("--prepare", "--always-download", "bash", "-o", str(tmp_path / "sd"), env=env)
    assert sorted(p.name for p in scratch_base.iterdir()) == sorted([live.name, upstreams.name]), r.stderr
    os.close(holder)


def test_another_roots_absolute_symlinks_are_followed_inside_it(tmp_path):
    """With --root, `ROOT/lib -> /usr/lib` means ROOT's /usr/lib, as in a
    chroot: the file comes from the root, never from the host's path."""
    root = _dpkg_root(tmp_path / "root", EVIL, {"evil": "/.\n/lib\n/lib/sm-only-in-root\n/lib/sm-only-in-root/f\n"})
    (root / "usr/lib/sm-only-in-root").mkdir(parents=True)
    (root / "usr/lib/sm-only-in-root/f").write_text("from the root\n")
    (root / "lib").symlink_to("/usr/lib")
    assert not Path("/usr/lib/sm-only-in-root").exists()
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "packages").write_text("evil\n")
    out = tmp_path / "app"
    run_cli("--build", "-f", "chroot", "--root", str(root), str(sd), "-o", str(out))
    assert (out / "usr/lib/sm-only-in-root/f").read_text() == "from the root\n"
    assert os.readlink(out / "lib") == "usr/lib"


@pytest.mark.parametrize("fmt", ["chroot", "ext2"])
def test_a_symlink_planted_where_packages_have_a_directory_stays_inside(prepared, tmp_path, fmt):
    """A base image puts `usr/share/doc/bash -> <an existing host dir>`
    where bash has a directory.  Following it would write bash's docs into
    the host directory (and chmod it): the package's directory replaces
    the symlink instead, in both formats."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    host_dir.chmod(0o1777)
    members = [("usr/share/doc/bash", tarfile.SYMTYPE, str(host_dir), 0o777)]
    appliance = _appliance_with(prepared, tmp_path / "sd", "zz-plant.tar", _tarball(members))
    out = tmp_path / "app"
    extra = ["--modules", "boot", "--size", "300M"] if fmt == "ext2" else []
    run_cli("--build", "-f", fmt, *extra, str(appliance), "-o", str(out))
    assert list(host_dir.iterdir()) == [] and host_dir.stat().st_mode & 0o7777 == 0o1777
    if fmt == "chroot":
        doc = out / "usr/share/doc/bash"
        assert doc.is_dir() and not doc.is_symlink()
        assert (doc / "copyright").read_bytes() == Path("/usr/share/doc/bash/copyright").read_bytes()
    else:
        assert _ext2_node(out / "root", "/usr/share/doc/bash")[0] == "directory"
        assert "copyright" in _debugfs(out / "root", "ls /usr/share/doc/bash")
