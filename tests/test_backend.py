"""The dpkg backend against this machine's dpkg database, with dpkg-query
as the oracle."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import supermin

from conftest import SMALL, run_cli


def dpkg_query(*args: str) -> str:
    return subprocess.run(["dpkg-query", *args], check=True, capture_output=True, text=True).stdout


def installed() -> dict:
    """name -> (version, arch, depends, pre-depends, provides) of installed packages."""
    out = {}
    fmt = "${Package}\t${Version}\t${Architecture}\t${Depends}\t${Pre-Depends}\t${Provides}\t${db:Status-Abbrev}\n"
    for line in dpkg_query("-W", "-f", fmt).splitlines():
        name, version, arch, dep, pre, prov, status = line.split("\t")
        if status.startswith("ii"):
            out[name] = (version, arch, dep, pre, prov)
    return out


def test_detects_dpkg_and_lists_every_installed_package(backend):
    assert backend.name == "dpkg"
    assert supermin.Backend.open("dpkg").name == "dpkg"
    ours = {p.name for p in backend.packages()}
    assert ours == set(installed())


def test_package_metadata_matches_dpkg_query(backend):
    bash = backend.package("bash")
    version, arch, *_ = installed()["bash"]
    assert (bash.name, bash.version, bash.arch) == ("bash", version, arch)
    assert bash.full_name == f"bash_{version}_{arch}"
    assert repr(bash) == f"<Package {bash.full_name}>"
    assert any(d.startswith("libc6") for d in bash.depends)


def test_file_list_matches_dpkg_L(backend):
    listed = {l for l in dpkg_query("-L", "coreutils").splitlines() if l.startswith("/") and l != "/."}
    files = backend.package("coreutils").files
    assert {f.path for f in files} == listed
    ls = next(f for f in files if f.path in ("/bin/ls", "/usr/bin/ls"))
    assert ls.kind == "file" and ls.mode & 0o111 and not ls.is_config


def test_conffiles_are_config(backend):
    conffiles = set(dpkg_query("-W", "-f", "${Conffiles}", "bash").split())
    config = {f.path for f in backend.package("bash").files if f.is_config}
    assert {c for c in conffiles if c.startswith("/")} <= config
    assert "/etc/bash.bashrc" in config and "/etc/skel/.bashrc" in config


def test_unknown_package_is_a_typed_error_naming_it(backend):
    with pytest.raises(supermin.PackageNotFoundError) as e:
        backend.package("no-such-package-xyz")
    assert e.value.names == ["no-such-package-xyz"]
    assert "no-such-package-xyz" in str(e.value)
    with pytest.raises(supermin.PackageNotFoundError) as e:
        backend.resolve(["bash", "nope-1", "nope-2"])
    assert e.value.names == ["nope-1", "nope-2"]


def _satisfied(clause: str, closure: dict) -> bool:
    """Is one Depends clause satisfied by a member of the closure?"""
    for alt in clause.split("|"):
        name = alt.strip().split(" ")[0].split("(")[0].split(":")[0]
        if name in closure:
            return True
        for prov in closure.values():
            if name in [p.strip().split(" ")[0] for p in prov[4].split(",")]:
                return True
    return False


@pytest.mark.parametrize(
    "names",
    [["bash"], ["bash", "coreutils"], ["dnf"], ["python3", "git", "perl"]],
)
def test_closure_is_closed_and_contains_its_inputs(backend, names):
    db = installed()
    assert set(names) <= set(db), "scripts/setup.sh installs these"
    closure = {p.name: db[p.name] for p in backend.resolve(names)}
    assert set(names) <= set(closure)
    for name, (_, _, dep, pre, _) in closure.items():
        for clause in filter(None, (c.strip() for c in f"{dep},{pre}".split(","))):
            assert _satisfied(clause, closure), f"{name}: '{clause}' not satisfied in the closure"


def test_virtual_packages_and_any_qualifiers_are_honoured(backend):
    # base-files Pre-Depends on the virtual 'awk' (upstream drops it).
    names = {p.name for p in backend.resolve(["base-files"])}
    assert "mawk" in names or "gawk" in names
    # dnf (which scripts/setup.sh installs) depends on python3:any
    # (upstream loses python3).
    assert "python3:any" in installed()["dnf"][2]
    assert "python3" in {p.name for p in backend.resolve(["dnf"])}


def test_resolution_is_deterministic(backend):
    a = [p.full_name for p in backend.resolve(["python3", "bash"])]
    b = [p.full_name for p in supermin.Backend.detect().resolve(["bash", "python3"])]
    assert a == b and a == sorted(a, key=lambda n: n.split("_")[0])


def test_package_renders_html_for_jupyter(backend):
    html = backend.package("bash")._repr_html_()
    assert "<table>" in html and "/usr/bin/bash" in html


def test_list_drivers():
    assert ("debian/dpkg", True) in supermin.list_drivers()


def test_among_installed_providers_the_required_one_is_taken(tmp_path):
    """With gawk installed next to mawk (as libguestfs0 brings it), `awk`
    for base-files is mawk (Priority: required, adds nothing) even when the
    database lists gawk (optional, needing more) first: the closure of
    bash + coreutils stays what it is without gawk."""
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    status = Path("/var/lib/dpkg/status").read_text()
    gawk = ("Package: gawk\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\n"
            "Version: 1:5.2.1-2\nProvides: awk\nPre-Depends: libc6, tar, dpkg\nDescription: GNU awk\n\n")
    (root / "var/lib/dpkg/status").write_text(gawk + status)
    without = {p.name for p in supermin.Backend.detect().resolve(SMALL)}
    with_gawk = {p.name for p in supermin.Backend.open("dpkg", root=str(root)).resolve(SMALL)}
    assert "mawk" in with_gawk and "gawk" not in with_gawk
    assert with_gawk == without


def test_on_this_host_awk_is_mawk_though_gawk_is_installed(prepared, tmp_path):
    """The real case (scripts/setup.sh installs gawk): bash + coreutils
    take mawk for base-files' `awk`, and -v says why."""
    assert "install ok installed" in dpkg_query("-W", "-f", "${Status}", "gawk")
    names = {p.name for p in supermin.Backend.detect().resolve(SMALL)}
    assert "mawk" in names and "gawk" not in names and "readline-common" not in names, sorted(names)
    r = run_cli("--build", "-f", "chroot", "-v", str(prepared), "-o", str(tmp_path / "app"))
    assert re.search(r"base-files: 'awk': mawk chosen over gawk \(required; adds 0 packages against \d+\)",
                     r.stderr), r.stderr


def alternative_value(name: str) -> str:
    """The host's choice for an alternatives group, by update-alternatives (the oracle)."""
    out = subprocess.run(["update-alternatives", "--query", name], check=True, capture_output=True, text=True).stdout
    return re.search(r"^Value: (.*)$", out, re.M).group(1)


def test_alternatives_links_come_along_and_awk_runs(built, tmp_path):
    """/usr/bin/awk -> /etc/alternatives/awk -> mawk, which no package
    lists, is in an appliance of bash + coreutils and runs, although the
    host's own choice is gawk (not in the appliance); named, gawk is taken
    as the host has it; excluded, the link is left out."""
    assert alternative_value("awk") == "/usr/bin/gawk", "scripts/setup.sh installs gawk, the higher priority"
    assert os.readlink(built / "usr/bin/awk") == "../../etc/alternatives/awk"
    assert os.readlink(built / "etc/alternatives/awk") == "../../usr/bin/mawk"
    out = subprocess.run(["chroot", str(built), "/usr/bin/awk", "BEGIN { print 6 * 7 }"],
                         capture_output=True, text=True, check=True).stdout
    assert out == "42\n"
    # A slave whose target is in the appliance comes too (nawk), one whose
    # target is not does not.
    assert os.readlink(built / "usr/bin/nawk") == "../../etc/alternatives/nawk"
    assert not (built / "etc/alternatives/pager").is_symlink()

    r = supermin.build(["bash", "coreutils", "gawk"], tmp_path / "gawk", format="chroot")
    assert "gawk" in {p.name for p in r.packages}
    assert os.readlink(tmp_path / "gawk/etc/alternatives/awk") == "../../usr/bin/gawk"

    sd = tmp_path / "sd"
    supermin.prepare(SMALL, sd)
    (sd / "excludefiles").write_text("-/usr/bin/awk\n")
    supermin.build([sd], tmp_path / "excluded")
    assert not os.path.lexists(tmp_path / "excluded/usr/bin/awk")
    assert (tmp_path / "excluded/usr/bin/mawk").exists()


def test_a_malformed_alternatives_file_is_named_and_left_out(tmp_path):
    """A broken admin file under --root costs its own links only, with a
    warning naming the file and line; the rest of the build goes on."""
    root = tmp_path / "root"
    (root / "var/lib/dpkg/alternatives").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc/alternatives").mkdir(parents=True)
    shutil.copy("/var/lib/dpkg/status", root / "var/lib/dpkg/status")
    (root / "etc/os-release").write_text("ID=debian\n")
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    (root / "var/lib/dpkg/alternatives/bad").write_text("auto\n/usr/bin/bad\nslave\n../../../etc/shadow\n\n")
    sd = tmp_path / "sd"
    (sd).mkdir()
    (sd / "packages").write_text("")
    (sd / "hostfiles").write_text("/usr/bin/tool\n")
    # Paths far beyond PATH_MAX (once a way to overflow the stack while
    # resolving them), and a link where the root has none: a group may not
    # put a link where the build needs a directory of its own.
    (root / "var/lib/dpkg/alternatives/deep").write_text("auto\n/usr/bin/deep\n\n" + "/a" * 5000 + "\n1\n\n")
    (root / "var/lib/dpkg/alternatives/modules").write_text("auto\n/lib/modules\n\n/usr/bin/tool\n1\n\n")
    (root / "etc/alternatives/modules").symlink_to("/usr/bin/tool")
    (root / "var/lib/dpkg/alternatives/tool").write_text("auto\n/usr/bin/t\n\n/usr/bin/tool\n1\n\n")
    (root / "etc/alternatives/tool").symlink_to("/usr/bin/tool")
    (root / "usr/bin/t").symlink_to("/etc/alternatives/tool")
    r = run_cli("--root", str(root), "--build", "-f", "chroot", str(sd), "-o", str(tmp_path / "out"))
    assert re.search(r"alternatives: .*/var/lib/dpkg/alternatives/bad: line 4: .*not an absolute path", r.stderr), r.stderr
    assert re.search(r"alternatives: .*/var/lib/dpkg/alternatives/deep: line 4: .*under 4096 bytes", r.stderr), r.stderr
    assert (tmp_path / "out/usr/bin/tool").exists() and not os.path.lexists(tmp_path / "out/usr/bin/bad")
    assert not os.path.lexists(tmp_path / "out/lib/modules") and not os.path.lexists(tmp_path / "out/usr/lib/modules")
    assert os.readlink(tmp_path / "out/usr/bin/t") == "../../etc/alternatives/tool", "a group the root has is made"
