"""The pacman backend against real Arch packages: built here with makepkg
(Debian ships it), installed into a root of their own with pacman, and
published in a repository made with repo-add; pacman itself is the
oracle for packages, files and dependencies."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import supermin
from conftest import run_cli

PKGBUILDS = {
    # A static busybox, so that the appliance can run something; a backup
    # file (its pristine copy comes from the package); a versioned
    # dependency on a package with an epoch; a dependency met by a
    # provide only.
    "sm-busybox": ("zst", """
pkgname=sm-busybox
pkgver=1.36.1
pkgrel=2
pkgdesc="a static busybox"
arch=('x86_64')
license=('GPL-2.0-only')
depends=('sm-base>=2.0' 'libsm.so=1-64')
backup=('etc/sm.conf')
source=('busybox')
sha256sums=('SKIP')
options=('!strip' '!debug')
package() {
  install -Dm0755 busybox "$pkgdir/usr/bin/busybox"
  ln -s busybox "$pkgdir/usr/bin/sh"
  ln -s busybox "$pkgdir/usr/bin/cat"
  install -d "$pkgdir/etc"
  echo "greeting=pristine" > "$pkgdir/etc/sm.conf"
}
"""),
    # An epoch, and a versioned virtual package.
    "sm-base": ("gz", """
pkgname=sm-base
pkgver=3.1
pkgrel=1
epoch=1
pkgdesc="base files"
arch=('any')
license=('MIT')
provides=('sm-base-virtual=2.5')
package() {
  install -d "$pkgdir/usr/share/sm"
  echo base > "$pkgdir/usr/share/sm/base"
}
"""),
    # Needs the virtual package at a version only the provide has; provides
    # a soname as Arch's libraries do.
    "sm-lib": ("xz", """
pkgname=sm-lib
pkgver=0.9
pkgrel=3
pkgdesc="a library"
arch=('x86_64')
license=('MIT')
depends=('sm-base-virtual>=2')
provides=('libsm.so=1-64')
package() {
  install -d "$pkgdir/usr/lib"
  echo lib > "$pkgdir/usr/lib/libsm.so.1"
}
"""),
    # Installed but needed by nothing above.
    "sm-extra": ("zst", """
pkgname=sm-extra
pkgver=1.0
pkgrel=1
pkgdesc="not in the closure"
arch=('any')
license=('MIT')
depends=('sm-busybox')
package() {
  install -d "$pkgdir/usr/share/sm-extra"
  echo extra > "$pkgdir/usr/share/sm-extra/x"
}
"""),
}


def pacman(root: Path, *args: str) -> str:
    return subprocess.run(["pacman", "--root", str(root), "--dbpath", str(root / "var/lib/pacman"), *args],
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def pacman_world(tmp_path_factory):
    """makepkg-built packages (as `nobody`: makepkg refuses root),
    installed into a fresh root with pacman -U, and a repo-add repository
    with a pacman.conf for downloads."""
    for tool in ("makepkg", "pacman", "repo-add", "fakeroot"):
        assert shutil.which(tool), f"{tool} is required (scripts/setup.sh installs it)"
    base = tmp_path_factory.mktemp("pacworld")
    base.chmod(0o755)
    build = Path(tmp_path_factory.mktemp("makepkg", numbered=True))
    nobody = pwd.getpwnam("nobody")
    # Every parent must be searchable by nobody.
    for parent in [build, *build.parents]:
        if parent != Path("/"):
            parent.chmod(parent.stat().st_mode | 0o711)
    out = build / "out"
    out.mkdir()
    for name, (ext, pkgbuild) in PKGBUILDS.items():
        d = build / name
        d.mkdir()
        (d / "PKGBUILD").write_text(pkgbuild.lstrip())
        if "busybox" in pkgbuild:
            shutil.copy("/bin/busybox", d / "busybox")
    for path in [build, *build.rglob("*")]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    for name, (ext, _) in PKGBUILDS.items():
        subprocess.run(["runuser", "-u", "nobody", "--", "env", f"HOME={build}", f"PKGDEST={out}",
                        f"PKGEXT=.pkg.tar.{ext}", "makepkg", "--nodeps", "-f"],
                       cwd=build / name, check=True, capture_output=True)
    pkgs = sorted(out.glob("*.pkg.tar.*"))
    assert len(pkgs) == len(PKGBUILDS), pkgs
    root = base / "root"
    (root / "var/lib/pacman").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('NAME="Arch Linux"\nID=arch\n')
    conf = base / "pacman.conf"
    conf.write_text("[options]\nArchitecture = x86_64\nSigLevel = Never\nLocalFileSigLevel = Never\n")
    pacman(root, "--config", str(conf), "--noconfirm", "--noscriptlet", "-U", *map(str, pkgs))
    repo = base / "repo"
    repo.mkdir()
    for p in pkgs:
        shutil.copy(p, repo)
    subprocess.run(["repo-add", "-q", str(repo / "smlocal.db.tar.gz"), *map(str, sorted(repo.glob("*.pkg.tar.*")))],
                   check=True, capture_output=True)
    dl_conf = base / "download.conf"
    dl_conf.write_text(f"[options]\nArchitecture = x86_64\nSigLevel = Never\n[smlocal]\nServer = file://{repo}\n")
    return {"root": root, "conf": dl_conf, "pkgs": {p.name.split("-")[1]: p for p in pkgs}}


def test_detected_and_every_package_matches_pacman_q(pacman_world):
    root = pacman_world["root"]
    b = supermin.Backend.detect(root=str(root))
    assert b.name == "pacman"
    oracle = dict(line.split() for line in pacman(root, "-Q").splitlines())
    assert {p.name: p.version for p in b.packages()} == oracle
    base = b.package("sm-base")
    assert (base.version, base.arch, base.full_name) == ("1:3.1-1", "any", "sm-base-1:3.1-1.any")


def test_files_and_backup_files_match_pacman_ql(pacman_world):
    root = pacman_world["root"]
    b = supermin.Backend.open("pacman", root=str(root))
    for name in PKGBUILDS:
        oracle = {line.split(" ", 1)[1].removeprefix(str(root)).rstrip("/") or "/"
                  for line in pacman(root, "-Ql", name).splitlines()}
        assert {f.path for f in b.package(name).files} == oracle, name
    files = {f.path: f for f in b.package("sm-busybox").files}
    assert files["/etc/sm.conf"].is_config and not files["/usr/bin/busybox"].is_config
    assert files["/usr/bin/sh"].kind == "symlink" and files["/usr/bin"].kind == "directory"


def test_closure_is_closed_by_pacmans_own_answer(pacman_world):
    """The closure of sm-busybox: the versioned dependency on sm-base (epoch
    1 beats no epoch), libsm.so met by sm-lib's provide, sm-lib's
    sm-base-virtual>=2 met by sm-base's versioned provide; not sm-extra.
    pacman -T (deptest) confirms every dependency of the closure is met."""
    root = pacman_world["root"]
    b = supermin.Backend.open("pacman", root=str(root))
    closure = b.resolve(["sm-busybox"])
    assert [p.name for p in closure] == ["sm-base", "sm-busybox", "sm-lib"]
    deps = [d for p in closure for d in p.depends]
    assert sorted(deps) == ["libsm.so=1-64", "sm-base-virtual>=2", "sm-base>=2.0"]
    assert pacman(root, "-T", *deps) == ""


def test_package_files_match_pacman_qlp(pacman_world):
    for name, path in pacman_world["pkgs"].items():
        p = supermin.Package.from_file(path)
        info = {k.strip(): v.strip() for k, v in (l.split(" : ", 1) for l in subprocess.run(
            ["pacman", "-Qip", str(path)], check=True, capture_output=True, text=True).stdout.splitlines()
            if " : " in l)}
        assert (p.name, p.version, p.arch) == (info["Name"], info["Version"], info["Architecture"])
        assert p.name == f"sm-{name}"
        oracle = {l.split(" ", 1)[1].rstrip("/") for l in subprocess.run(
            ["pacman", "-Qlp", str(path)], check=True, capture_output=True, text=True).stdout.splitlines()}
        assert {f.path for f in p.files} == oracle, name
    conf = {f.path for f in supermin.Package.from_file(pacman_world["pkgs"]["busybox"]).files if f.is_config}
    assert conf == {"/etc/sm.conf"}


def test_chroot_and_ext2_from_the_pacman_root_run_busybox(pacman_world, tmp_path):
    root = pacman_world["root"]
    sd = tmp_path / "sd"
    run_cli("--root", str(root), "--prepare", "sm-busybox", "--packager-config", str(pacman_world["conf"]),
            "-o", str(sd))
    with tarfile.open(sd / "base.tar.gz") as tar:
        assert tar.extractfile("./etc/sm.conf").read() == b"greeting=pristine\n"
    run_cli("--root", str(root), "--build", "-f", "chroot", "--include-packagelist", str(sd),
            "-o", str(tmp_path / "chroot"))
    out = subprocess.run(["chroot", str(tmp_path / "chroot"), "/usr/bin/sh", "-c", "cat /etc/sm.conf; echo ran"],
                         capture_output=True, text=True, check=True).stdout
    assert out == "greeting=pristine\nran\n"
    assert (tmp_path / "chroot/packagelist").read_text().split() == [
        "sm-base-1:3.1-1.any", "sm-busybox-1.36.1-2.x86_64", "sm-lib-0.9-3.x86_64"]
    assert not (tmp_path / "chroot/usr/share/sm-extra").exists()
    run_cli("--root", str(root), "--build", "-f", "ext2", "--modules", "boot", "--size", "200M", str(sd),
            "-o", str(tmp_path / "ext2"))
    app = supermin.BuildResult.from_output(tmp_path / "ext2")
    assert app.boot("cat /etc/sm.conf /usr/lib/libsm.so.1", timeout=240) == "greeting=pristine\nlib\n"


def test_pristine_config_files_are_downloaded_only_when_edited(pacman_world, tmp_path):
    """The root's copy whose md5sum is the %BACKUP% one is the pristine
    file; an edited one is fetched with pacman -Syw into scratch space with
    the given configuration; without one, another root's own configuration
    is never used."""
    root, conf = pacman_world["root"], pacman_world["conf"]
    r = run_cli("--root", str(root), "--prepare", "sm-busybox", "--packager-config", str(conf), "-v",
                "-o", str(tmp_path / "verified"))
    assert "1 config files verified" in r.stderr and "0 packages to download" in r.stderr, r.stderr
    (root / "etc/sm.conf").write_text("greeting=edited\n")
    try:
        r = run_cli("--root", str(root), "--prepare", "sm-busybox", "--packager-config", str(conf), "-v",
                    "-o", str(tmp_path / "pristine"))
        assert "pacman -Syw" in r.stderr or "-Syw" in r.stderr, r.stderr
        with tarfile.open(tmp_path / "pristine/base.tar.gz") as tar:
            assert tar.extractfile("./etc/sm.conf").read() == b"greeting=pristine\n"
        r = run_cli("--root", str(root), "--prepare", "sm-busybox", "-o", str(tmp_path / "refused"), check=False)
        assert r.returncode == 1 and "--packager-config" in r.stderr and "--use-installed" in r.stderr, r.stderr
        assert not (tmp_path / "refused").exists()
        run_cli("--root", str(root), "--prepare", "--use-installed", "sm-busybox", "-o", str(tmp_path / "host"))
        with tarfile.open(tmp_path / "host/base.tar.gz") as tar:
            assert tar.extractfile("./etc/sm.conf").read() == b"greeting=edited\n"
    finally:
        (root / "etc/sm.conf").write_text("greeting=pristine\n")


def copy_root(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest, symlinks=True)
    return dest


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "sm-lib-0.9-3/desc").write_text("%NAME%\nsm-lib\n\n%VERSION%\n"), r"sm-lib-0\.9-3/desc: no single %VERSION% value"),
    (lambda d: (d / "sm-lib-0.9-3/desc").write_text("sm-lib\n"), r"sm-lib-0\.9-3/desc: line 1: .*outside a %SECTION%"),
    (lambda d: (d / "sm-lib-0.9-3").rename(d / "sm-lib-0.9-4"), r"sm-lib-0\.9-4/desc: the directory of sm-lib-0\.9-3 is named"),
    (lambda d: (d / "sm-lib-0.9-3/desc").write_text("%NAME%\n../../x\n\n%VERSION%\n1-1\n"), r"desc: invalid package name"),
    (lambda d: (d / "sm-lib-0.9-3/desc").write_text(
        (d / "sm-lib-0.9-3/desc").read_text().replace("sm-base-virtual>=2", "sm base>=")), r"desc: line \d+: dependency"),
    (lambda d: (d / "sm-busybox-1.36.1-2/files").write_text("%FILES%\nusr/\nusr/../../etc/shadow\n"),
     r"sm-busybox-1\.36\.1-2/files: line 3: path .* leaves the root"),
    (lambda d: (d / "sm-busybox-1.36.1-2/files").write_text("%FILES%\n/etc/passwd\n"), r"files: line 2: path"),
    (lambda d: (d / "sm-busybox-1.36.1-2/files").write_text("%BACKUP%\netc/sm.conf\n"), r"files: line 2: backup entry"),
])
def test_a_damaged_database_is_named_and_nothing_is_lost(pacman_world, tmp_path, damage, message):
    import re
    root = copy_root(pacman_world["root"], tmp_path / "root")
    out = tmp_path / "out"
    sd = tmp_path / "sd"
    run_cli("--root", str(root), "--prepare", "--use-installed", "sm-busybox", "-o", str(sd))
    run_cli("--root", str(root), "--build", "-f", "chroot", str(sd), "-o", str(out))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    damage(root / "var/lib/pacman/local")
    r = run_cli("--root", str(root), "--build", "-f", "chroot", str(sd), "-o", str(out), check=False)
    assert r.returncode == 1 and re.search(message, r.stderr), r.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before, "the earlier output is intact"
    assert not list(tmp_path.glob("out.*")), "no staging left behind"


def test_truncated_and_corrupt_package_files_are_named(pacman_world, tmp_path):
    good = pacman_world["pkgs"]["busybox"]
    cut = tmp_path / "cut.pkg.tar.zst"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(supermin.SuperminError, match=r"cut\.pkg\.tar\.zst: not a valid pacman package"):
        supermin.Package.from_file(cut)
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz") as tar:
        tar.add(__file__, arcname="usr/share/x")
    with pytest.raises(supermin.SuperminError, match=r"plain\.tar\.gz: .*no \.PKGINFO"):
        supermin.Package.from_file(plain)


def test_detection_without_os_release_and_by_packager(pacman_world, tmp_path):
    """A root with no os-release is detected by its only database (pacman's
    ALPM_DB_VERSION); --packager pacman names it outright."""
    root = copy_root(pacman_world["root"], tmp_path / "root")
    (root / "etc/os-release").unlink()
    assert supermin.Backend.detect(root=str(root)).name == "pacman"
    drivers = run_cli("--root", str(root), "--list-drivers").stdout
    assert "arch/pacman" in drivers
    r = run_cli("--root", str(root), "--packager", "pacman", "--prepare", "--use-installed", "sm-lib",
                "-o", str(tmp_path / "sd"))
    assert (tmp_path / "sd/packages").read_text().split() == ["sm-lib"]
