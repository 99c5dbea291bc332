"""The RPM backend against real RPM data (tests/data/rpm: a 129-package
CBL-Mariner 2.0 rpmdb.sqlite and rpmbuild-made .rpm files; see its README),
with Debian's `rpm` as the oracle (scripts/setup.sh installs it)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import supermin

FIXTURES = Path(__file__).resolve().parent / "data" / "rpm"
MARINER_DB = FIXTURES / "rpmdb-mariner-2.0" / "rpmdb.sqlite"
PACKAGES = sorted((FIXTURES / "packages").rglob("*.rpm"))
NEVRA = "%{NAME}-%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}.%{ARCH}\\n"

# Missing fixtures are an error, not a reason to skip.
assert MARINER_DB.exists() and PACKAGES, f"RPM fixtures not found at {FIXTURES}"


def make_root(base: Path, os_release: str = 'ID=mariner\nVERSION_ID="2.0"\n') -> Path:
    """A root holding a copy of the Mariner database where rpm keeps it
    (a copy, so that the oracle's own writes never touch the fixture)."""
    root = base / "mariner-root"
    (root / "var/lib/rpm").mkdir(parents=True)
    shutil.copy(MARINER_DB, root / "var/lib/rpm/rpmdb.sqlite")
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text(os_release)
    return root


def rpm_q(root: Path, *args: str) -> str:
    """The oracle: Debian's rpm reading the same database (through a copy
    made for it, as rpm may write a -shm file beside it)."""
    return subprocess.run(["rpm", "--dbpath", str(root / "var/lib/rpm"), *args],
                          capture_output=True, text=True, check=False).stdout


@pytest.fixture(scope="module")
def mariner(tmp_path_factory) -> Path:
    return make_root(tmp_path_factory.mktemp("rpm"))


@pytest.fixture(scope="module")
def oracle_root(tmp_path_factory) -> Path:
    return make_root(tmp_path_factory.mktemp("oracle"))


@pytest.fixture(scope="module")
def backend(mariner) -> supermin.Backend:
    return supermin.Backend.open("rpm", root=str(mariner))


def test_packages_and_nevras_match_rpm(backend, oracle_root):
    expected = sorted(l for l in rpm_q(oracle_root, "-qa", "--qf", NEVRA).splitlines()
                      if not l.startswith("gpg-pubkey"))
    assert len(expected) == 129
    assert sorted(p.full_name for p in backend.packages()) == expected


def test_files_and_config_flags_match_rpm(backend, oracle_root):
    checked = 0
    for p in backend.packages():
        out = rpm_q(oracle_root, "-q", "--qf", "[%{FILENAMES}\t%{FILEFLAGS}\n]", p.full_name)
        expected = {}
        for line in out.splitlines():
            path, flags = line.rsplit("\t", 1)
            if int(flags) & 64:  # %ghost: not on disk, skipped
                continue
            expected[path] = bool(int(flags) & 1)
        got = {f.path: f.is_config for f in p.files}
        assert got == expected, p.full_name
        checked += len(got)
    assert checked > 5000


@pytest.mark.parametrize("name", ["bash", "glibc", "openssl", "rpm"])
def test_requires_match_rpm(backend, oracle_root, name):
    expected = rpm_q(oracle_root, "-q", "--requires", name).splitlines()
    assert backend.package(name).depends == expected


@pytest.mark.parametrize("name", ["bash", "rpm", "curl", "tdnf"])
def test_closure_is_closed_by_rpms_own_answer(backend, oracle_root, name):
    """Every requirement of every package in the closure is provided by a
    package in the closure, as `rpm -q --whatprovides` sees it."""
    closure = backend.resolve([name])
    names = {p.full_name for p in closure}
    assert name in {p.name for p in closure}
    requires = sorted({r for p in closure for r in rpm_q(oracle_root, "-q", "--requires", p.full_name).splitlines()
                       if not r.startswith("rpmlib(")})
    for req in requires:
        dep = req.split(" ")[0]
        providers = set(rpm_q(oracle_root, "-q", "--qf", NEVRA, "--whatprovides", dep).splitlines())
        providers = {p for p in providers if not p.startswith("no package")}
        if not providers:
            continue  # nothing installed provides it: listed at -v, not fatal
        assert providers & names, f"{req}: provided by {providers}, none in the closure"


def test_resolving_is_fast_and_deterministic(mariner):
    import time
    t = time.perf_counter()
    a = [p.full_name for p in supermin.Backend.open("rpm", root=str(mariner)).resolve(["bash"])]
    elapsed = time.perf_counter() - t
    b = [p.full_name for p in supermin.Backend.open("rpm", root=str(mariner)).resolve(["bash"])]
    assert a == b and "bash-5.1.8-1.cm2.x86_64" in a
    assert elapsed < 5, "a sanity bound only; the benchmark measures it"


def test_detection_honours_id_like(tmp_path):
    root = make_root(tmp_path, 'ID=rocky-ish\nID_LIKE="rhel centos fedora"\n')
    drivers = dict(supermin.list_drivers(str(root)))
    assert drivers["fedora/rpm"] is True and drivers["debian/dpkg"] is False
    assert supermin.Backend.detect(str(root)).name == "rpm"
    cli = subprocess.run([os.sys.executable, "-m", "supermin", "--list-drivers", "--root", str(root)],
                         capture_output=True, text=True, check=True).stdout
    assert "fedora/rpm\tdetected" in cli


def test_read_only_database_as_a_non_root_user(tmp_path):
    """A WAL-mode rpmdb.sqlite in a directory the user cannot write."""
    base = Path(os.environ.get("TMPDIR", "/var/tmp")) / f"supermin-rpm-ro-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    root = make_root(base)
    for p in [base, root, root / "var", root / "var/lib", root / "var/lib/rpm"]:
        p.chmod(0o755)
    (root / "var/lib/rpm/rpmdb.sqlite").chmod(0o444)
    pkg = Path(supermin.__file__).parent
    shutil.copytree(pkg, base / "pkg" / "supermin")
    for dirpath, dirnames, filenames in os.walk(base / "pkg"):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    try:
        code = (f"import supermin; b = supermin.Backend.open('rpm', root={str(root)!r}); "
                "print(len(b.packages()), len(b.resolve(['bash'])))")
        r = subprocess.run(["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={base / 'pkg'}",
                            "/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] == "129"
        assert not (root / "var/lib/rpm/rpmdb.sqlite-shm").exists(), "nothing written beside the db"
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- package files -------------------------------------------------------------


@pytest.mark.parametrize("path", PACKAGES, ids=lambda p: str(p.relative_to(FIXTURES / "packages")))
def test_package_from_rpm_file_matches_rpm_qp(path):
    p = supermin.Package.from_file(str(path))
    nevra = subprocess.run(["rpm", "-qp", "--qf", NEVRA, str(path)], capture_output=True, text=True,
                           check=True).stdout.strip()
    # As upstream supermin spells full names: an explicit epoch 0 is not shown.
    assert p.full_name == nevra.replace("-0:", "-", 1)
    out = subprocess.run(["rpm", "-qp", "--qf", "[%{FILENAMES}\t%{FILEFLAGS}\t%{FILEMODES}\n]", str(path)],
                         capture_output=True, text=True, check=True).stdout
    expected = {}
    for line in out.splitlines():
        name, flags, mode = line.rsplit("\t", 2)
        expected[name] = (bool(int(flags) & 1), int(mode) & 0o177777)
    assert {f.path: (f.is_config, f.mode) for f in p.files} == expected


def test_package_from_deb_file_matches_dpkg_deb(tmp_path):
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        "Package: supermin-test\nVersion: 1:2.0-3\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Depends: bash (>= 5), coreutils | busybox\nDescription: test\n")
    (tree / "etc/supermin-test").mkdir(parents=True)
    (tree / "etc/supermin-test/conf").write_text("x=1\n")
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/tool").write_text("#!/bin/sh\n")
    (tree / "usr/bin/tool").chmod(0o755)
    (tree / "usr/bin/alias").symlink_to("tool")
    deb = tmp_path / "supermin-test.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(deb)], check=True,
                   capture_output=True)
    p = supermin.Package.from_file(str(deb))
    assert (p.name, p.version, p.arch, p.full_name) == ("supermin-test", "1:2.0-3", "all",
                                                       "supermin-test_1:2.0-3_all")
    assert p.depends == ["bash (>= 5)", "coreutils | busybox"]
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    expected = {line.split()[5].lstrip(".").rstrip("/") for line in listing.splitlines()} - {""}
    assert {f.path for f in p.files} == expected
    kinds = {f.path: f.kind for f in p.files}
    assert kinds["/usr/bin/alias"] == "symlink" and kinds["/usr/bin/tool"] == "file"


def test_truncated_and_foreign_package_files_are_named(tmp_path):
    truncated = tmp_path / "cut.rpm"
    truncated.write_bytes(PACKAGES[0].read_bytes()[:300])
    with pytest.raises(supermin.BackendError, match="cut.rpm"):
        supermin.Package.from_file(str(truncated))
    text = tmp_path / "notes.rpm"
    text.write_text("hello")
    with pytest.raises(supermin.BackendError, match=r"not a package file supermin reads \(\.deb, \.rpm, \.pkg\.tar\.zst, \.apk\)"):
        supermin.Package.from_file(str(text))


def test_corrupt_header_and_missing_database_are_clear(tmp_path):
    root = make_root(tmp_path)
    db = root / "var/lib/rpm/rpmdb.sqlite"
    before = db.read_bytes()
    con = sqlite3.connect(db)
    con.execute("UPDATE Packages SET blob = substr(blob, 1, 40) WHERE hnum = (SELECT min(hnum) FROM Packages)")
    con.commit()
    con.close()
    with pytest.raises(supermin.BackendError, match="header 1 is corrupt"):
        supermin.Backend.open("rpm", root=str(root))
    assert db.read_bytes() != before  # (our edit), and the reader wrote nothing more:
    assert not (root / "var/lib/rpm/rpmdb.sqlite-wal").exists() or (root / "var/lib/rpm/rpmdb.sqlite-wal").stat().st_size == 0
    with pytest.raises(supermin.BackendError, match="no rpm database"):
        supermin.Backend.open("rpm", root=str(tmp_path / "empty"))


def test_another_roots_database_is_copied_into_the_given_tmpdir(mariner, tmp_path, monkeypatch):
    """Another root's database is read from a copy in a scratch directory:
    in `tmpdir=` when given (the core reads no environment), else in
    $TMPDIR; the copy is gone once the backend is open."""
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    b = supermin.Backend.open("rpm", root=str(mariner), tmpdir=str(mine))
    assert len(b.packages()) == 129 and list(mine.iterdir()) == []
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(supermin.SuperminError, match=re.escape(str(not_a_dir))):
        supermin.Backend.open("rpm", root=str(mariner), tmpdir=str(not_a_dir))
    with pytest.raises(supermin.SuperminError, match="must be an absolute path"):
        supermin.Backend.detect(str(mariner), tmpdir="relative")
    monkeypatch.setenv("TMPDIR", str(not_a_dir))
    with pytest.raises(supermin.SuperminError, match=re.escape(str(not_a_dir))):
        supermin.Backend.open("rpm", root=str(mariner))
    assert supermin.Backend.open("rpm", root=str(mariner), tmpdir=str(mine)).name == "rpm"


# -- an RPM root made here with rpm itself -------------------------------------


def test_prepare_and_build_chroot_from_an_installed_rpm_root(tmp_path):
    """Install rpmbuild-made packages into a fresh root with rpm, then
    prepare (--use-installed) and build a chroot from it."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID="almalinux"\nID_LIKE="rhel centos fedora"\n')
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--initdb"], check=True)
    names = ["rpm-basic", "rpm-file-attrs", "rpm-hardlinks"]
    files = [next(p for p in PACKAGES if p.name.startswith(n + "-") and "/v6/" in str(p)) for n in names]
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--nodeps", "--noscripts",
                    *map(str, files)], check=True, capture_output=True)
    sd, app = tmp_path / "sd", tmp_path / "app"
    from conftest import run_cli
    run_cli("--root", str(root), "--prepare", "--use-installed", *names, "-o", str(sd))
    assert (sd / "packages").read_text().split() == sorted(names)
    import tarfile
    with tarfile.open(sd / "base.tar.gz") as tar:
        config = sorted(m.name for m in tar.getmembers() if m.isfile())
    assert config == ["./etc/rpm-basic/example_config.toml", "./opt/rpm-file-attrs/config",
                      "./opt/rpm-file-attrs/config_noreplace"]
    run_cli("--root", str(root), "--build", "-f", "chroot", str(sd), "-o", str(app))
    for name in names:
        listed = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-ql", name],
                                capture_output=True, text=True, check=True).stdout.split()
        for path in listed:
            host = root / path.lstrip("/")
            if os.path.lexists(host):
                assert os.path.lexists(app / path.lstrip("/")), path
    alphas = sorted((app / "opt/rpm-hardlinks").glob("alpha-*"))
    assert len(alphas) > 1 and len({p.stat().st_ino for p in alphas}) == 1, "hard links kept"


# -- a whole RPM world: rpmbuild, rpm -i, createrepo_c, dnf download ----------

SPECS = {
    "sm-base": """
Name: sm-base
Epoch: 3
Version: 2.0
Release: 1
Summary: supermin test base
License: MIT
BuildArch: noarch
Provides: sm-shell = 2.0
%description
A config file and a versioned virtual provide.
%install
mkdir -p %{buildroot}/etc
echo 'greeting=pristine' > %{buildroot}/etc/sm.conf
%files
%config(noreplace) /etc/sm.conf
""",
    "sm-lib": """
Name: sm-lib
Version: 1.0
Release: 1
Summary: supermin test library
License: MIT
BuildArch: noarch
%description
Wanted through a rich dependency.
%install
mkdir -p %{buildroot}/usr/share/sm-lib
echo data > %{buildroot}/usr/share/sm-lib/data
%files
/usr/share/sm-lib
""",
    "sm-extra": """
Name: sm-extra
Version: 1.0
Release: 1
Summary: installed, never required
License: MIT
BuildArch: noarch
%description
Must stay out of the closure.
%install
mkdir -p %{buildroot}/usr/share/sm-extra
echo x > %{buildroot}/usr/share/sm-extra/x
%files
/usr/share/sm-extra
""",
    "sm-busybox": """
Name: sm-busybox
Version: 1.35
Release: 1
Summary: a static busybox, so the appliance can run something
License: GPL-2.0
Source0: busybox
AutoReqProv: no
Requires: sm-shell >= 1.5
Requires: /etc/sm.conf
Requires: (sm-lib or sm-missing)
Requires: (sm-absent if sm-never-installed)
%description
busybox from Debian's busybox-static.
%install
mkdir -p %{buildroot}/usr/bin
install -m 0755 %{SOURCE0} %{buildroot}/usr/bin/busybox
ln -s busybox %{buildroot}/usr/bin/sh
ln -s busybox %{buildroot}/usr/bin/cat
ln %{buildroot}/usr/bin/busybox %{buildroot}/usr/bin/bb-hardlink
%files
/usr/bin/busybox
/usr/bin/sh
/usr/bin/cat
/usr/bin/bb-hardlink
""",
}


@pytest.fixture(scope="module")
def rpm_world(tmp_path_factory):
    """Packages built here with rpmbuild, installed into a fresh root with
    rpm, and published in a createrepo_c repository for dnf."""
    for tool in ("rpmbuild", "createrepo_c", "dnf"):
        assert shutil.which(tool), f"{tool} is required (scripts/setup.sh installs it)"
    base = tmp_path_factory.mktemp("rpmworld")
    top = base / "rpmbuild"
    for d in ("SPECS", "SOURCES", "RPMS", "BUILD", "BUILDROOT", "SRPMS"):
        (top / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", top / "SOURCES" / "busybox")
    for name, spec in SPECS.items():
        (top / "SPECS" / f"{name}.spec").write_text(spec.lstrip())
        subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", "--define", "debug_package %{nil}",
                        "--define", "__os_install_post %{nil}", "--define", "_build_id_links none",
                        str(top / "SPECS" / f"{name}.spec")], check=True, capture_output=True)
    rpms = sorted((top / "RPMS").rglob("*.rpm"))
    root = base / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID="fedora"\nVERSION_ID="40"\n')
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--initdb"], check=True)
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--nodeps", "--noscripts",
                    *map(str, rpms)], check=True, capture_output=True)
    # What a scriptlet's `alternatives --install /usr/bin/ls ls /usr/bin/busybox 10 --family bb`
    # leaves (Fedora's chkconfig layout: `@family@priority`): a link no package lists.
    (root / "var/lib/alternatives").mkdir(parents=True)
    (root / "var/lib/alternatives/ls").write_text("auto\n/usr/bin/ls\n\n/usr/bin/busybox\n@bb@10\n")
    (root / "etc/alternatives").mkdir()
    (root / "etc/alternatives/ls").symlink_to("/usr/bin/busybox")
    (root / "usr/bin/ls").symlink_to("/etc/alternatives/ls")
    repo = base / "repo"
    repo.mkdir()
    for r in rpms:
        shutil.copy(r, repo)
    subprocess.run(["createrepo_c", "-q", str(repo)], check=True)
    conf = base / "dnf.conf"
    conf.write_text(f"[main]\nreposdir={base}/no-repos.d\ncachedir={base}/dnf-cache\ngpgcheck=0\n"
                    f"[smlocal]\nname=smlocal\nbaseurl=file://{repo}\nenabled=1\ngpgcheck=0\n")
    return {"root": root, "conf": conf, "base": base}


def test_closure_of_the_built_packages(rpm_world):
    b = supermin.Backend.open("rpm", root=str(rpm_world["root"]))
    names = [p.name for p in b.resolve(["sm-busybox"])]
    # versioned virtual provide (sm-base), file require (also sm-base), rich
    # `or` (sm-lib), rich `if` whose condition is not installed (nothing).
    assert names == ["sm-base", "sm-busybox", "sm-lib"]
    assert b.package("sm-base").full_name == "sm-base-3:2.0-1.noarch"


def test_prepare_downloads_pristine_config_files_only_when_edited(rpm_world, tmp_path):
    from conftest import run_cli
    import tarfile
    root, conf = rpm_world["root"], rpm_world["conf"]

    def sm_conf(sd):
        with tarfile.open(sd / "base.tar.gz") as tar:
            return tar.extractfile("./etc/sm.conf").read().decode()

    r = run_cli("--root", str(root), "--prepare", "sm-busybox", "--packager-config", str(conf),
                "-o", str(tmp_path / "verified"), "-v")
    assert "1 config files verified" in r.stderr and "0 packages to download" in r.stderr, r.stderr
    assert sm_conf(tmp_path / "verified") == "greeting=pristine\n"

    (root / "etc/sm.conf").write_text("greeting=edited\n")
    try:
        run_cli("--root", str(root), "--prepare", "sm-busybox", "--packager-config", str(conf),
                "-o", str(tmp_path / "pristine"))
        assert sm_conf(tmp_path / "pristine") == "greeting=pristine\n"
        assert not list(tmp_path.glob("pristine/*.rpm")), "downloads stay in scratch space"
        run_cli("--root", str(root), "--prepare", "--use-installed", "sm-busybox", "-o", str(tmp_path / "host"))
        assert sm_conf(tmp_path / "host") == "greeting=edited\n"
    finally:
        (root / "etc/sm.conf").write_text("greeting=pristine\n")


def test_chroot_and_ext2_from_the_rpm_root_run_busybox(rpm_world, tmp_path):
    from conftest import run_cli
    root, conf = rpm_world["root"], rpm_world["conf"]
    sd = tmp_path / "sd"
    run_cli("--root", str(root), "--prepare", "sm-busybox", "--packager-config", str(conf), "-o", str(sd))
    run_cli("--root", str(root), "--build", "-f", "chroot", str(sd), "-o", str(tmp_path / "chroot"))
    out = subprocess.run(["chroot", str(tmp_path / "chroot"), "/usr/bin/sh", "-c", "cat /etc/sm.conf; echo ran"],
                         capture_output=True, text=True, check=True).stdout
    assert out == "greeting=pristine\nran\n"
    # The root's `ls` alternative (/var/lib/alternatives) came along and runs.
    assert os.readlink(tmp_path / "chroot/usr/bin/ls") == "../../etc/alternatives/ls"
    out = subprocess.run(["chroot", str(tmp_path / "chroot"), "/usr/bin/ls", "/etc"],
                         capture_output=True, text=True, check=True).stdout
    assert "sm.conf" in out.split()
    assert not (tmp_path / "chroot/usr/share/sm-extra").exists()
    bb = tmp_path / "chroot/usr/bin"
    assert (bb / "busybox").stat().st_ino == (bb / "bb-hardlink").stat().st_ino
    run_cli("--root", str(root), "--build", "-f", "ext2", "--modules", "boot", "--size", "200M", str(sd),
            "-o", str(tmp_path / "ext2"))
    app = supermin.BuildResult.from_output(tmp_path / "ext2")
    assert app.boot("cat /etc/sm.conf; ls /etc/alternatives", timeout=240) == "greeting=pristine\nls\n"


def test_an_opened_backend_prepares_and_builds(rpm_world, tmp_path):
    """`backend=` (a Backend opened once, e.g. on a root without
    os-release) is what prepare() and build() use; giving a root too is an
    error rather than a guess."""
    root = rpm_world["root"]
    b = supermin.Backend.open("rpm", root=str(root))
    sd = tmp_path / "sd"
    supermin.prepare(["sm-busybox"], sd, use_installed=True, backend=b)
    result = supermin.build([sd], tmp_path / "chroot", backend=b)
    assert sorted(p.name for p in result.packages) == ["sm-base", "sm-busybox", "sm-lib"]
    out = subprocess.run(["chroot", str(tmp_path / "chroot"), "/usr/bin/sh", "-c", "echo ran"],
                         capture_output=True, text=True, check=True).stdout
    assert out == "ran\n"
    with pytest.raises(supermin.SuperminError, match="root or backend, not both"):
        supermin.build(["sm-busybox"], tmp_path / "x", root=str(root), backend=b)


def _berkeley_db_root(base: Path) -> Path:
    """A root whose /var/lib/rpm/Packages is a real BerkeleyDB hash database
    (as rpm < 4.16 wrote it: key = header number, value = header blob),
    made from the Mariner headers with db_load."""
    import struct
    root = base / "bdb-root"
    (root / "var/lib/rpm").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text("ID=centos\nVERSION_ID=7\n")
    con = sqlite3.connect(f"file:{MARINER_DB}?immutable=1", uri=True)
    rows = con.execute("SELECT hnum, blob FROM Packages ORDER BY hnum").fetchall()
    con.close()
    escape = lambda b: "".join(f"\\{x:02x}" for x in b)
    dump = base / "packages.txt"
    dump.write_text("".join(f"{escape(struct.pack('<I', h))}\n{escape(blob)}\n" for h, blob in rows))
    subprocess.run(["db5.3_load", "-T", "-t", "hash", "-f", str(dump), str(root / "var/lib/rpm/Packages")],
                   check=True)
    return root


def test_berkeley_db_is_read_through_rpmdb(backend, tmp_path):
    root = _berkeley_db_root(tmp_path)
    legacy = supermin.Backend.open("rpm", root=str(root))
    assert [p.full_name for p in legacy.packages()] == [p.full_name for p in backend.packages()]
    assert [p.full_name for p in legacy.resolve(["bash"])] == [p.full_name for p in backend.resolve(["bash"])]
    # Without the rpm tools: a clear error that says what is missing.
    env = dict(os.environ, PATH="/nonexistent")
    r = subprocess.run([os.sys.executable, "-m", "supermin", "--root", str(root), "--prepare", "--use-installed",
                        "bash", "-o", str(tmp_path / "sd")], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "needs the rpm tools" in r.stderr, r.stderr
    assert not (tmp_path / "sd").exists()


def test_a_locked_database_is_still_read_and_left_alone(tmp_path):
    """Another process holds a write lock (as rpm does during a
    transaction): we read the last committed state, write nothing."""
    root = make_root(tmp_path)
    db = root / "var/lib/rpm/rpmdb.sqlite"
    before = db.read_bytes()
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        b = supermin.Backend.open("rpm", root=str(root))
        assert len(b.packages()) == 129
    finally:
        holder.rollback()
        holder.close()
    assert db.read_bytes() == before


def test_a_root_without_os_release_is_detected_by_its_database(tmp_path, prepared):
    """`rpm --root R --initdb` makes no /etc/os-release: the one database
    there decides.  A root with two databases and no os-release is an
    error that says to name one with --packager, which then works."""
    root = make_root(tmp_path)
    (root / "etc/os-release").unlink()
    assert supermin.Backend.detect(str(root)).name == "rpm"
    assert dict(supermin.list_drivers(str(root)))["fedora/rpm"] is True
    r = subprocess.run([sys.executable, "-m", "supermin", "--prepare", "--use-installed", "--root", str(root),
                        "bash", "-o", str(tmp_path / "sd")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "bash" in (tmp_path / "sd" / "packages").read_text().split()
    (root / "var/lib/dpkg").mkdir(parents=True)
    shutil.copy("/var/lib/dpkg/status", root / "var/lib/dpkg/status")
    with pytest.raises(supermin.BackendError, match="databases of dpkg and rpm .* --packager"):
        supermin.Backend.detect(str(root))
    for kind in ("rpm", "dpkg"):
        r = subprocess.run([sys.executable, "-m", "supermin", "--prepare", "--use-installed", "--root", str(root),
                            "--packager", kind, "bash", "-o", str(tmp_path / f"sd-{kind}")],
                           capture_output=True, text=True)
        if kind == "rpm":
            assert r.returncode == 0, r.stderr
        else:  # dpkg's status was copied without its file lists: dpkg read it
            assert r.returncode == 1 and r.stderr.startswith("supermin: dpkg: cannot read the file list"), r.stderr
    r = subprocess.run([sys.executable, "-m", "supermin", "--prepare", "--packager", "pacmann", "bash",
                        "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 1 and "unknown package manager 'pacmann' (known: dpkg, rpm" in r.stderr, r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(supermin.BackendError, match="no package database under .*empty"):
        supermin.Backend.detect(str(empty))
    with pytest.raises(supermin.SuperminError, match="packager or backend, not both"):
        supermin.prepare(["bash"], tmp_path / "y", backend=supermin.Backend.detect(), packager="dpkg")


def test_derivatives_are_known_by_id(tmp_path):
    for distro in ("mageia", "openEuler", "anolis", "kylin"):
        root = make_root(tmp_path / distro, f"ID={distro.lower()}\n")
        assert dict(supermin.list_drivers(str(root)))["fedora/rpm"] is True, distro


def test_if_newer_rebuilds_when_the_roots_alternative_changes(rpm_world, tmp_path):
    """An alternatives choice is part of what a build is made from: the
    root's `ls` pointed elsewhere (as `alternatives --set` does, by
    replacing the link) rebuilds with that reason; back again, rebuilds
    back; untouched, nothing to do."""
    root = rpm_world["root"]
    admin = root / "var/lib/alternatives/ls"
    link = root / "etc/alternatives/ls"
    sd = tmp_path / "sd"
    supermin.prepare(["sm-busybox"], sd, use_installed=True, root=str(root))
    out = tmp_path / "chroot"
    supermin.build([sd], out, root=str(root), if_newer=True)
    assert supermin.build([sd], out, root=str(root), if_newer=True).skipped
    saved = admin.read_text()
    try:
        admin.write_text("manual\n/usr/bin/ls\n\n/usr/bin/busybox\n@bb@10\n/usr/bin/cat\n5\n")
        link.unlink()
        link.symlink_to("/usr/bin/cat")
        r = supermin.build([sd], out, root=str(root), if_newer=True)
        assert not r.skipped
        assert r.rebuilt_because == ("alternative /etc/alternatives/ls → /usr/bin/cat (was /usr/bin/busybox)",)
        assert os.readlink(out / "etc/alternatives/ls") == "../../usr/bin/cat"
    finally:
        admin.write_text(saved)
        link.unlink()
        link.symlink_to("/usr/bin/busybox")
    r = supermin.build([sd], out, root=str(root), if_newer=True)
    assert r.rebuilt_because == ("alternative /etc/alternatives/ls → /usr/bin/busybox (was /usr/bin/cat)",)
    assert supermin.build([sd], out, root=str(root), if_newer=True).skipped
