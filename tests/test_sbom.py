"""SBOMs of what went into an appliance, SPDX 2.3 and CycloneDX 1.5 JSON,
checked with the SPDX project's own validator (spdx-tools) and
CycloneDX's JSON-schema validation (cyclonedx-python-lib), against the
package databases of this host (dpkg), a Mariner root (rpm, with licences
and vendors, rpm -q as the oracle) and an Alpine root (apk)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

import supermin
from conftest import run_cli
from test_rpm import make_root, rpm_q

ALPINE = Path(__file__).parent / "data/apk/alpine-3.4-root"


def valid(result: supermin.BuildResult) -> tuple:
    """Both SBOMs, each passed by its format's own validator."""
    spdx = json.loads(result.sbom("spdx"))
    errors = validate_full_spdx_document(JsonLikeDictParser().parse(spdx))
    assert not errors, [e.validation_message for e in errors][:5]
    cdx_text = result.sbom("cyclonedx")
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(cdx_text) is None
    return spdx, json.loads(cdx_text)


def test_the_hosts_packages_with_purls_and_maintainers(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    result = supermin.build(["bash", "coreutils"], tmp_path / "out")
    spdx, cdx = valid(result)
    names = sorted(p.full_name for p in result.packages)
    assert sorted(f"{p['name']}_{p['versionInfo']}" for p in spdx["packages"]) == \
        sorted(n.rsplit("_", 1)[0] for n in names)
    bash = supermin.Backend.detect().package("bash")
    want = f"pkg:deb/debian/bash@{bash.version}?arch={bash.arch}"
    [entry] = [c for c in cdx["components"] if c["name"] == "bash"]
    assert entry["purl"] == want and entry["version"] == bash.version
    maintainer = subprocess.run(["dpkg-query", "-W", "-f", "${Maintainer}", "bash"], capture_output=True,
                                text=True, check=True).stdout
    assert entry["supplier"] == {"name": maintainer}
    [item] = [p for p in spdx["packages"] if p["name"] == "bash"]
    assert item["supplier"].startswith("Organization: ") and item["externalRefs"][0]["referenceLocator"] == want
    assert spdx["creationInfo"]["created"] == "2023-11-14T22:13:20Z" == cdx["metadata"]["timestamp"]
    # Deterministic: the same packages and SOURCE_DATE_EPOCH, the same bytes.
    (tmp_path / "elsewhere").mkdir()
    again = supermin.build(["bash", "coreutils"], tmp_path / "elsewhere" / "out")
    assert again.sbom("spdx") == result.sbom("spdx")
    assert again.sbom("cyclonedx") == result.sbom("cyclonedx")


def test_an_rpm_roots_licences_and_vendors_as_rpm_records_them(tmp_path):
    root = make_root(tmp_path)
    backend = supermin.Backend.open("rpm", root=root)
    result = supermin.build(["bash"], tmp_path / "out", backend=backend)
    spdx, cdx = valid(result)
    for p in result.packages:
        license = rpm_q(root, "-q", "--qf", "%{LICENSE}", p.name).strip()
        assert p.license == license, p.name
        [c] = [c for c in cdx["components"] if c["name"] == p.name]
        assert c["licenses"] == [{"license": {"name": license}}]
        assert c["purl"].startswith(f"pkg:rpm/mariner/{p.name}@")
    texts = {x["extractedText"] for x in spdx["hasExtractedLicensingInfos"]}
    assert texts == {p.license for p in result.packages}
    vendor = rpm_q(root, "-q", "--qf", "%{VENDOR}", "bash").strip()
    assert backend.package("bash").supplier == vendor


def test_an_alpine_roots_packages(tmp_path):
    root = tmp_path / "alpine"
    shutil.copytree(ALPINE, root, symlinks=True)
    result = supermin.build(["busybox"], tmp_path / "out", root=root)
    spdx, cdx = valid(result)
    purls = sorted(c["purl"] for c in cdx["components"])
    assert purls == ["pkg:apk/alpine/busybox@1.24.2-r12?arch=x86_64", "pkg:apk/alpine/musl@1.1.14-r14?arch=x86_64"]
    record = (root / "lib/apk/db/installed").read_text().split("\n\n")
    [musl] = [r for r in record if "\nP:musl\n" in "\n" + r]
    assert next(p for p in result.packages if p.name == "musl").license == re.search(r"^L:(.*)$", musl, re.M)[1]


def test_the_command_line_writes_one_named_by_its_extension(tmp_path):
    sd = tmp_path / "sd"
    run_cli("--prepare", "bash", "-o", str(sd))
    run_cli("--build", "-f", "chroot", str(sd), "-o", str(tmp_path / "out"), "--sbom", str(tmp_path / "a.cdx.json"))
    assert json.loads((tmp_path / "a.cdx.json").read_text())["bomFormat"] == "CycloneDX"
    run_cli("--build", "-f", "chroot", str(sd), "-o", str(tmp_path / "out"), "--sbom", str(tmp_path / "a.json"),
            "--sbom-format", "spdx")
    assert json.loads((tmp_path / "a.json").read_text())["spdxVersion"] == "SPDX-2.3"
    # A name that says no format: refused before anything is built.
    r = run_cli("--build", "-f", "chroot", str(sd), "-o", str(tmp_path / "new"), "--sbom", str(tmp_path / "a.txt"),
                check=False)
    assert r.returncode == 1 and "name it *.spdx.json or *.cdx.json" in r.stderr, r.stderr
    assert not (tmp_path / "new").exists()
    with pytest.raises(supermin.UsageError, match="unknown SBOM format 'xml'"):
        supermin.BuildResult(output=tmp_path, format="chroot").sbom("xml")


def test_an_sbom_is_never_written_through_a_planted_link(tmp_path):
    """In a directory others can write, a link planted where the SBOM goes
    (or where a staging file could be) is replaced, never written through."""
    result = supermin.build(["bash"], tmp_path / "out")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "x.spdx.json"
    target.symlink_to(victim)
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        (tmp_path / f".x.spdx.json.{pid}.tmp").symlink_to(victim)
    result.write_sbom(target)
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and json.loads(target.read_text())["spdxVersion"] == "SPDX-2.3"
    assert not [p for p in tmp_path.glob(".x.spdx.json.*") if not p.is_symlink()], "no staging left"
    with pytest.raises(supermin.OutputError) as info:
        result.write_sbom(tmp_path / "no/such/dir/x.cdx.json")
    assert info.value.path == tmp_path / "no/such/dir/x.cdx.json"


def test_another_roots_os_release_is_read_inside_it(tmp_path):
    """The purl namespace comes from the root's os-release, resolved inside
    the root: a link to /usr/lib/os-release there is the root's file (which
    this root lacks), never the host's Debian one."""
    root = tmp_path / "alpine"
    shutil.copytree(ALPINE, root, symlinks=True)
    (root / "etc/os-release").unlink()
    (root / "etc/os-release").symlink_to("/usr/lib/os-release")
    result = supermin.build(["busybox"], tmp_path / "out", backend=supermin.Backend.open("apk", root=root))
    assert result.distribution is None
    purls = [c["purl"] for c in json.loads(result.sbom("cyclonedx"))["components"]]
    assert all(p.startswith("pkg:apk/alpine/") for p in purls), purls


def test_hostile_outputs_and_odd_values_give_valid_sboms_or_clear_errors(tmp_path, monkeypatch):
    """A packagelist that is a FIFO or a link to /dev/zero reads as none
    (never blocks, never fills memory); a package listed twice is one
    component; a supplier with an unbalanced < is still a valid SPDX
    actor; a SOURCE_DATE_EPOCH a build refuses, the SBOM refuses too."""
    root = tmp_path / "alpine"
    shutil.copytree(ALPINE, root, symlinks=True)
    for name, make in (("fifo", lambda p: os.mkfifo(p)), ("zero", lambda p: p.symlink_to("/dev/zero"))):
        out = tmp_path / name
        out.mkdir()
        make(out / "packagelist")
        assert supermin.BuildResult.from_output(out, root=root).packages == []
    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "packagelist").write_text("busybox-1.24.2-r12.x86_64\n" * 2 + "musl-1.1.14-r14.x86_64\n")
    described = supermin.BuildResult.from_output(twice, root=root)
    assert [p.name for p in described.packages] == ["busybox", "musl"]
    valid(described)
    db = root / "lib/apk/db/installed"
    records = db.read_text().split("\n\n")
    records = [re.sub(r"^m:.*$", "m:Evil (Org)) <a@b", r, flags=re.M) if "\nP:musl\n" in "\n" + r else r
               for r in records]
    db.write_text("\n\n".join(records))
    evil = supermin.BuildResult.from_output(twice, root=root)
    assert [p.supplier for p in evil.packages if p.name == "musl"] == ["Evil (Org)) <a@b"]
    spdx, _ = valid(evil)
    assert "Organization: Evil Org" in {p["supplier"][:22] for p in spdx["packages"]}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1e9")
    with pytest.raises(supermin.SuperminError, match="SOURCE_DATE_EPOCH"):
        described.sbom("spdx")
    with pytest.raises(supermin.UsageError, match="unknown SBOM format"):
        described.sbom(1)


def test_an_up_to_date_if_newer_build_still_writes_its_sbom(tmp_path):
    sd = tmp_path / "sd"
    run_cli("--prepare", "bash", "-o", str(sd))
    out = tmp_path / "out"
    run_cli("--build", "-f", "chroot", "--if-newer", str(sd), "-o", str(out))
    r = run_cli("--build", "-f", "chroot", "--if-newer", str(sd), "-o", str(out), "--sbom", str(tmp_path / "b.cdx.json"))
    names = {c["name"] for c in json.loads((tmp_path / "b.cdx.json").read_text())["components"]}
    assert "bash" in names and "libc6" in names
