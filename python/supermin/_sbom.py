"""Software bills of materials of an appliance: every package that went
into it, as SPDX 2.3 JSON or CycloneDX 1.5 JSON, with name, version,
architecture, supplier and licence where the package database records
them, and a package URL.  Deterministic: the same packages and
``SOURCE_DATE_EPOCH`` give the same bytes (identifiers are derived from
the contents, not drawn at random)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote

FORMATS = ("spdx", "cyclonedx")

#: purl type and default namespace of each package manager.
_PURL = {"dpkg": ("deb", "debian"), "rpm": ("rpm", "fedora"), "pacman": ("alpm", "arch"), "apk": ("apk", "alpine")}


def format_for(path: str, given: Optional[str] = None) -> str:
    """The SBOM format to write to ``path``: ``given``, else from the name
    (``*.spdx.json``/``*.spdx`` SPDX, ``*.cdx.json``/``*.bom.json``
    CycloneDX)."""
    if given is not None:
        if not isinstance(given, str) or given not in FORMATS:
            from ._supermin import UsageError

            raise UsageError(f"unknown SBOM format {str(given)[:64]!r}: use {' or '.join(FORMATS)}")
        return given
    name = os.path.basename(path).lower()
    if name.endswith((".spdx.json", ".spdx")):
        return "spdx"
    if name.endswith((".cdx.json", ".bom.json", ".cyclonedx.json")):
        return "cyclonedx"
    from ._supermin import UsageError

    raise UsageError(
        f"cannot tell the SBOM format from {os.path.basename(path)!r}: name it *.spdx.json or *.cdx.json, "
        "or give the format (--sbom-format spdx|cyclonedx)"
    )


def distribution(root: str) -> Optional[str]:
    """The ``ID`` of ``root``'s os-release (the purl namespace), read
    inside the root by the core (another root's symlinks lead nowhere
    outside it)."""
    from ._supermin import _os_release_id

    value = _os_release_id(root)
    return value if value is not None and re.fullmatch(r"[a-z0-9._-]{1,64}", value) else None


def purl(package: Any, namespace: Optional[str]) -> str:
    """``pkg:deb/debian/bash@5.2.15-2+b8?arch=amd64``; rpm's epoch is a
    qualifier, as the purl spec has it."""
    kind, default = _PURL.get(package.packager, ("generic", None))
    version, qualifiers = package.version, [("arch", package.arch)]
    if kind == "rpm" and re.match(r"^\d+:", version):
        epoch, version = version.split(":", 1)
        qualifiers.append(("epoch", epoch))
    ns = namespace or default
    enc = lambda s: quote(s, safe="+~.-_")  # noqa: E731 - as the purl spec's examples write versions
    path = f"{enc(ns)}/{enc(package.name)}" if ns else enc(package.name)
    query = "&".join(f"{k}={enc(v)}" for k, v in sorted(qualifiers) if v)
    return f"pkg:{kind}/{path}@{enc(version)}" + (f"?{query}" if query else "")


def _created(epoch: Optional[int]) -> str:
    """``epoch`` (``SOURCE_DATE_EPOCH``, as a build reads it), else now."""
    seconds = int(time.time()) if epoch is None else epoch
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        from ._supermin import UsageError

        raise UsageError(f"SOURCE_DATE_EPOCH={seconds} is not a time an SBOM can state") from None


def _digest(name: str, packages: Sequence[Any], namespace: Optional[str]) -> str:
    h = hashlib.sha256(name.encode())
    for p in sorted(packages, key=lambda p: p.full_name):
        h.update(b"\0" + purl(p, namespace).encode() + b"\0" + (p.license or "").encode())
        h.update(b"\0" + (p.supplier or "").encode())
    return h.hexdigest()


def _spdx_actor(supplier: str) -> str:
    """``Debian Bash Maintainers <x@y>`` -> ``Organization: Debian Bash
    Maintainers (x@y)``."""
    m = re.fullmatch(r"\s*(.*?)\s*<([^<>()\s]+@[^<>()\s]+)>\s*", supplier)
    name, email = (m.group(1), m.group(2)) if m else (supplier, "")
    name = re.sub(r"\s+", " ", re.sub(r"[()<>]", " ", name)).strip() or "unknown"
    return f"Organization: {name} ({email})" if email else f"Organization: {name}"


def spdx(name: str, packages: Sequence[Any], namespace: Optional[str], tool_version: str,
         epoch: Optional[int] = None) -> Dict[str, Any]:
    """An SPDX 2.3 document.  Licences are kept as the database wrote them
    (often not SPDX identifiers: ``GPLv2+``), each as a document-local
    ``LicenseRef-`` with its text."""
    packages = sorted(packages, key=lambda p: p.full_name)
    licences = sorted({p.license for p in packages if p.license})
    ref = {text: f"LicenseRef-{i + 1}" for i, text in enumerate(licences)}
    items: List[Dict[str, Any]] = []
    for i, p in enumerate(packages):
        ident = f"SPDXRef-Package-{i + 1}-" + re.sub(r"[^A-Za-z0-9.-]", "-", p.name)
        item: Dict[str, Any] = {
            "SPDXID": ident,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": ref.get(p.license, "NOASSERTION") if p.license else "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "supplier": _spdx_actor(p.supplier) if p.supplier else "NOASSERTION",
            "externalRefs": [
                {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                 "referenceLocator": purl(p, namespace)}
            ],
        }
        items.append(item)
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"https://supermin.invalid/spdx/{_digest(name, packages, namespace)}",
        "creationInfo": {"created": _created(epoch), "creators": [f"Tool: supermin-{tool_version}"]},
        "packages": items,
        "hasExtractedLicensingInfos": [
            {"licenseId": ref[text], "extractedText": text, "name": text} for text in licences
        ],
        "relationships": [
            {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": item["SPDXID"]}
            for item in items
        ],
    }


def cyclonedx(name: str, packages: Sequence[Any], namespace: Optional[str], tool_version: str,
              epoch: Optional[int] = None) -> Dict[str, Any]:
    """A CycloneDX 1.5 BOM: the appliance as the described component,
    each package a library component with its purl."""
    packages = sorted(packages, key=lambda p: p.full_name)
    components = []
    for p in packages:
        component: Dict[str, Any] = {
            "type": "library",
            "bom-ref": purl(p, namespace),
            "name": p.name,
            "version": p.version,
            "purl": purl(p, namespace),
            "properties": [{"name": "supermin:arch", "value": p.arch},
                           {"name": "supermin:packager", "value": p.packager}],
        }
        if p.supplier:
            component["supplier"] = {"name": p.supplier}
        if p.license:
            component["licenses"] = [{"license": {"name": p.license}}]
        components.append(component)
    digest = _digest(name, packages, namespace)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.UUID(digest[:32])}",
        "version": 1,
        "metadata": {
            "timestamp": _created(epoch),
            "tools": {"components": [{"type": "application", "name": "supermin", "version": tool_version}]},
            "component": {"type": "operating-system", "bom-ref": "appliance", "name": name},
        },
        "components": components,
        "dependencies": [{"ref": "appliance", "dependsOn": [c["bom-ref"] for c in components]}],
    }


def render(format: str, name: str, packages: Sequence[Any], namespace: Optional[str],
           epoch: Optional[int] = None) -> str:
    """The SBOM as JSON text (sorted keys, a final newline)."""
    from ._supermin import __version__

    make = {"spdx": spdx, "cyclonedx": cyclonedx}[format_for("", format)]
    unique = list({p.full_name: p for p in packages}.values())
    return json.dumps(make(name, unique, namespace, __version__, epoch), indent=2, sort_keys=True) + "\n"
