"""Kernels from distribution packages: a Debian kernel downloaded by name
(the metapackage followed to the kernel), the same from a .deb file, and
a host with no kernel at all (its /boot and module tree hidden in a mount
namespace), each booted in qemu."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import supermin
from conftest import run_cli

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "supermin" / "kernel-packages"


def cached_dirs() -> set:
    return {p.name for p in CACHE.glob("pkg-*")} if CACHE.exists() else set()


@pytest.fixture(scope="module")
def by_name(prepared, tmp_path_factory):
    """An ext2 appliance whose kernel is linux-image-amd64's, downloaded."""
    out = tmp_path_factory.mktemp("kp") / "app"
    r = run_cli("--build", "-f", "ext2", "--modules", "boot", "--kernel-package", "linux-image-amd64", "-v",
                str(prepared), "-o", str(out))
    return out, r.stderr


def test_a_kernel_package_downloaded_by_name_boots(by_name):
    out, log = by_name
    match = re.search(r"kernel: (\S+) \(version (\S+)\) from a kernel package", log)
    assert match, log
    version = match.group(2)
    assert "following the dependency linux-image-" in log or "downloaded in the last week" in log, log
    assert not (out / "kernel").is_symlink(), "copied: the cache may be cleared"
    app = supermin.BuildResult.from_output(out)
    assert app.boot("uname -r", timeout=240) == f"{version}\n"


def test_the_same_kernel_from_a_deb_file_reuses_the_unpacked_one(by_name, prepared, tmp_path):
    out, log = by_name
    version = re.search(r"\(version (\S+)\) from a kernel package", log).group(1)
    debs = tmp_path / "debs"
    debs.mkdir()
    subprocess.run(["apt-get", "-qq", "-o", "APT::Sandbox::User=root", "download", f"linux-image-{version}"],
                   cwd=debs, check=True, capture_output=True)
    [deb] = debs.glob("*.deb")
    before = cached_dirs()
    r = supermin.build([prepared], tmp_path / "app", format="ext2", modules=[], kernel_package=deb, verbose=1)
    assert r.kernel_version == version
    assert cached_dirs() == before, "unpacked once, reused by digest"


def test_a_host_without_a_kernel_takes_the_distributions(by_name, prepared, tmp_path):
    """/boot and /usr/lib/modules hidden (as in a container): the build says
    so and takes linux-image-amd64's kernel, and the appliance boots."""
    out = tmp_path / "app"
    script = ("mount -t tmpfs none /boot && mount -t tmpfs none /usr/lib/modules && "
              f"exec {sys.executable} -m supermin --build -f ext2 --modules boot -v {prepared} -o {out}")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "kernel: none on this host; taking the distribution's (linux-image-amd64)" in r.stderr, r.stderr
    app = supermin.BuildResult.from_output(out)
    assert app.boot("echo booted", timeout=240) == "booted\n"


def test_a_file_that_holds_no_kernel_is_named_and_nothing_is_lost(prepared, tmp_path):
    out = tmp_path / "app"
    supermin.build([prepared], out, format="chroot")
    before = sorted(p.name for p in out.iterdir())
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text("Package: not-a-kernel\nVersion: 1\nArchitecture: all\n"
                                        "Maintainer: t <t@t>\nDescription: t\n")
    (pkg / "usr/share/doc").mkdir(parents=True)
    deb = tmp_path / "not-a-kernel.deb"
    subprocess.run(["dpkg-deb", "-b", str(pkg), str(deb)], check=True, capture_output=True)
    ext2 = tmp_path / "ext2"
    with pytest.raises(supermin.KernelError, match=r"no kernel module tree .* in .*not-a-kernel\.deb"):
        supermin.build([prepared], ext2, format="ext2", kernel_package=deb)
    with pytest.raises(supermin.SuperminError, match=r"hostname: not a package file supermin reads"):
        supermin.build([prepared], ext2, format="ext2", kernel_package="/etc/hostname")
    assert not ext2.exists() and not list(tmp_path.glob("ext2.*"))
    assert sorted(p.name for p in out.iterdir()) == before


def _deb(root: Path, out: Path, name: str, version: str, depends: str = "") -> None:
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: t <t@t>\n"
        + (f"Depends: {depends}\n" if depends else "") + "Description: t\n")
    subprocess.run(["dpkg-deb", "-Znone", "-b", str(root), str(out / f"{name}_{version}_amd64.deb")],
                   check=True, capture_output=True)


def test_an_image_whose_modules_are_a_package_of_their_own(by_name, prepared, tmp_path):
    """Ubuntu's layout, from an apt repository of our own named by
    --packager-config: linux-image-generic (a metapackage) depends on the
    image package, which holds /boot/vmlinuz only and depends on a modules
    package (no modules.dep: depmod makes it).  Both are followed and
    unpacked together, and the modules-extra the metapackage also names
    (absent from the repository) is not taken for the modules."""
    out, log = by_name
    version = re.search(r"\(version (\S+)\) from a kernel package", log).group(1)
    unpacked = Path(re.search(r"kernel: (\S+)/boot/vmlinuz-\S+ \(version", log).group(1))
    repo, work = tmp_path / "repo", tmp_path / "work"
    repo.mkdir()
    _deb(work / "meta", repo, "linux-image-generic", "1.0",
         f"linux-image-{version}-split, linux-modules-extra-{version}-split")
    image = work / "image"
    (image / "boot").mkdir(parents=True)
    shutil.copy(unpacked / f"boot/vmlinuz-{version}", image / "boot")
    _deb(image, repo, f"linux-image-{version}-split", "1.0", f"coreutils, linux-modules-{version}-split")
    modules = work / "modules/lib/modules"
    shutil.copytree(unpacked / "lib/modules", modules, symlinks=True,
                    ignore=shutil.ignore_patterns("modules.dep*", "modules.alias*", "modules.symbols*"))
    _deb(work / "modules", repo, f"linux-modules-{version}-split", "1.0")
    subprocess.run("dpkg-scanpackages . /dev/null > Packages", shell=True, cwd=repo, check=True,
                   capture_output=True)
    conf = tmp_path / "apt.conf"
    for d in ("lists/partial", "cache/archives/partial", "parts"):
        (tmp_path / "apt" / d).mkdir(parents=True)
    (tmp_path / "apt/sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
    a = tmp_path / "apt"
    conf.write_text(f'Dir::Etc::SourceList "{a}/sources.list";\nDir::Etc::SourceParts "{a}/parts";\n'
                    f'Dir::State::Lists "{a}/lists";\nDir::Cache "{a}/cache";\n'
                    'APT::Sandbox::User "root";\n')
    subprocess.run(["apt-get", "-qq", "-c", str(conf), "update"], check=True, capture_output=True)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    app = tmp_path / "app"
    r = run_cli("--build", "-f", "ext2", "--modules", "boot", "--kernel-package", "linux-image-generic",
                "--packager-config", str(conf), "-v", str(prepared), "-o", str(app), env=env)
    assert f"following the dependency linux-image-{version}-split for the image" in r.stderr, r.stderr
    assert f"following the dependency linux-modules-{version}-split for the modules" in r.stderr, r.stderr
    assert "modules-extra" not in r.stderr.split("following")[-1]
    assert re.search(r"initrd: \d+ modules from .*/lib/modules/" + re.escape(version), r.stderr), r.stderr
    # Booted: the root disk's driver came from the modules package.
    assert supermin.BuildResult.from_output(app).boot("uname -r", timeout=240) == f"{version}\n"
