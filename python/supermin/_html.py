"""HTML reprs for Jupyter: tables whose text reads left to right
(Jupyter's CSS right-aligns table cells), long lists in a collapsible
``<details>`` with every row reachable.  The extension's classes call
these from their ``_repr_html_``."""

from __future__ import annotations

import html
from typing import Any, Iterable, List, Sequence, Tuple

LEFT = ' style="text-align:left"'


def _e(value: Any) -> str:
    return html.escape(str(value))


def table(rows: Iterable[Tuple[str, Any]], caption: str = "") -> str:
    """A two-column table of ``(label, value)``."""
    head = f"<caption{LEFT}>{_e(caption)}</caption>" if caption else ""
    body = "".join(f"<tr><th{LEFT}>{_e(k)}</th><td{LEFT}>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{head}{body}</table>"


def grid(columns: Sequence[str], rows: Iterable[Sequence[Any]], summary: str, open: bool = False) -> str:
    """A table of ``rows`` under ``columns``, folded in a ``<details>``
    whose summary is ``summary`` (every row is there, folded or not)."""
    head = "".join(f"<th{LEFT}>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td{LEFT}>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    state = " open" if open else ""
    return f"<details{state}><summary>{_e(summary)}</summary><table><tr>{head}</tr>{body}</table></details>"


def files(entries: Sequence[Any], summary: str) -> str:
    """A list of :class:`supermin.File` values."""
    rows = [(f.path, f.kind, f"{f.mode & 0o7777:o}", f.size, "yes" if f.is_config else "", f.package or "",
             f.origin) for f in entries]
    return grid(["path", "kind", "mode", "size", "config", "package", "origin"], rows, summary)


def package(p: Any) -> str:
    entries = p.files
    facts: List[Tuple[str, Any]] = [("name", p.name), ("version", p.version), ("arch", p.arch),
                                    ("packager", p.packager)]
    facts += [(k, v) for k, v in (("supplier", p.supplier), ("license", p.license)) if v]
    facts += [("depends", ", ".join(p.depends)), ("files", len(entries))]
    return table(facts, p.full_name) + files(entries, f"{len(entries)} files")


def backend(b: Any) -> str:
    return table([("package manager", b.name), ("root", b.root), ("packages", len(b.packages()))],
                 "supermin backend")


def appliance(a: Any) -> str:
    return table([
        ("inputs", " ".join(map(str, a.inputs))),
        ("packages", " ".join(a.packages)),
        ("hostfiles", " ".join(a.hostfiles)),
        ("excludes", " ".join(a.excludes)),
        ("base images", " ".join(str(p) for p in a.base_images)),
    ], "supermin appliance")


def closure(c: Any) -> str:
    rows = [(p.name, p.version, p.arch, c.why.get(p.name, "")) for p in c]
    named = sum(1 for p in c if c.why.get(p.name) == "named")
    return grid(["name", "version", "arch", "why included"], rows,
                f"{len(c)} packages ({named} named, {len(c) - named} dependencies)", open=True)


def build_result(r: Any) -> str:
    def size(path: Any) -> str:
        try:
            n = path.stat().st_size
        except (OSError, AttributeError):
            return ""
        return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} B"

    facts: List[Tuple[str, Any]] = [("format", r.format), ("output", r.output)]
    if r.skipped:
        facts.append(("if_newer", "up to date: nothing done"))
    elif r.rebuilt_because:
        facts.append(("rebuilt because", "; ".join(r.rebuilt_because)))
    for label in ("kernel", "initrd", "root"):
        path = getattr(r, label)
        if path is not None:
            facts.append((label, f"{path} ({size(path)})"))
    if r.kernel_version:
        facts.append(("kernel version", r.kernel_version))
    if r.uuid:
        facts.append(("uuid", r.uuid))
    facts += [("packages", len(r.packages)), ("paths", r.paths), ("files copied", r.files_copied),
              ("bytes copied", r.bytes_copied)]
    out = table(facts, "supermin build")
    if r.packages:
        rows = [(p.name, p.version, p.arch) for p in r.packages]
        out += grid(["name", "version", "arch"], rows, f"{len(r.packages)} packages")
    return out
