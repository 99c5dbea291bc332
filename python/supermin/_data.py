"""Plain values the API hands out: a :class:`File` is data (compared,
hashed, pickled and turned into a DataFrame by value), and the helpers
that let the extension's objects pickle.  Import from :mod:`supermin`."""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple


@dataclass(frozen=True)
class File:
    """One path: a package's file, or one a build would write.

    ``pandas.DataFrame(package.files)`` has a column per field.
    """

    #: Absolute path inside the root or the appliance.
    path: str
    #: ``file``, ``directory``, ``symlink``, ``special`` or ``missing``.
    kind: str
    #: ``st_mode`` (type and permission bits) on the host or in the
    #: package file; 0 when missing.
    mode: int
    #: Size in bytes (of a regular file; a symlink's is its target's
    #: length); 0 when missing.
    size: int
    #: A config file (declared by the package, or a regular file under
    #: ``/etc``): taken from the base image, never from the host.
    is_config: bool = False
    #: The name of the package that lists it, if one does.
    package: Optional[str] = None
    #: Where a build takes it from: ``package``, ``base image``,
    #: ``hostfiles``, ``directory`` (implied by others), ``alternatives``.
    origin: str = "package"

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a dict (``json.dumps``-able)."""
        return dataclasses.asdict(self)


class Closure(list):
    """A dependency closure: the packages (a list of :class:`Package`,
    sorted by name) and, in ``why``, why each is in: ``"named"``, or the
    package and dependency clause that took it (``"bash: libc6 (>= 2.36)"``)."""

    def __init__(self, packages: Iterable[Any] = (), why: "Optional[Dict[str, str]]" = None) -> None:
        super().__init__(packages)
        self.why: Dict[str, str] = dict(why or {})

    def __reduce__(self) -> Tuple[Any, ...]:
        return (Closure, (list(self), self.why))

    def _repr_html_(self) -> str:
        from . import _html

        return _html.closure(self)


def _closure(packages: List[Any], reasons: List[Optional[Tuple[str, str]]]) -> Closure:
    why = {p.name: ("named" if r is None else f"{r[0]}: {r[1]}") for p, r in zip(packages, reasons)}
    return Closure(packages, why)


@dataclass(frozen=True)
class ApplianceDiff:
    """What :meth:`Appliance.diff` found: paths only the other appliance
    writes (``added``), only this one writes (``removed``), and both write
    differently (``changed``: ``(this, other)`` pairs whose kind, mode,
    size, package or origin differ).  False when there is no difference."""

    added: List[File] = field(default_factory=list)
    removed: List[File] = field(default_factory=list)
    changed: List[Tuple[File, File]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_dict(self) -> Dict[str, Any]:
        """The differences as plain data (``json.dumps``-able)."""
        return {
            "added": [f.to_dict() for f in self.added],
            "removed": [f.to_dict() for f in self.removed],
            "changed": [{"before": a.to_dict(), "after": b.to_dict()} for a, b in self.changed],
        }

    def __repr__(self) -> str:
        return f"<ApplianceDiff +{len(self.added)} -{len(self.removed)} ~{len(self.changed)}>"

    def _repr_html_(self) -> str:
        rows = [("+", f, None) for f in self.added] + [("-", f, None) for f in self.removed]
        rows += [("~", b, a) for a, b in self.changed]
        rows.sort(key=lambda r: r[1].path)
        cell = '<td style="text-align:left">{}</td>'

        def describe(f: File) -> str:
            return f"{f.kind} {f.mode & 0o7777:o} {f.size} B {f.package or f.origin}"

        body = "".join(
            "<tr>" + cell.format(sign) + cell.format(html.escape(f.path))
            + cell.format(html.escape(describe(f) if was is None else f"{describe(was)} → {describe(f)}"))
            + "</tr>"
            for sign, f, was in rows
        )
        return (
            f"<details open><summary>{len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.changed)} changed</summary><table><tr><th></th><th style=\"text-align:left\">path</th>"
            f"<th style=\"text-align:left\">what</th></tr>{body}</table></details>"
        )


def _diff(this: Iterable[File], other: Iterable[File]) -> ApplianceDiff:
    before = {f.path: f for f in this}
    after = {f.path: f for f in other}
    return ApplianceDiff(
        added=[after[p] for p in sorted(after.keys() - before.keys())],
        removed=[before[p] for p in sorted(before.keys() - after.keys())],
        changed=[(before[p], after[p]) for p in sorted(before.keys() & after.keys())
                 if _compared(before[p]) != _compared(after[p])],
    )


def _compared(f: File) -> Tuple[Any, ...]:
    """What a change is: a directory many packages list is credited to the
    first of them by name, and another package set may credit another."""
    return (f.kind, f.mode, f.size, f.origin, None if f.kind == "directory" else f.package)


#: ``(kind, root)`` -> (the backend, its database time when read, its
#: packages by full name).
_OPENED: Dict[Tuple[str, str], Tuple[Any, float, Dict[str, Any]]] = {}


def _installed_package(kind: str, root: Any, full_name: str) -> Any:
    """An installed package again, after pickling: looked up by full name
    in the same root's database (read once per process, and again when
    the database has changed since)."""
    from ._supermin import Backend, PackageNotFoundError, SuperminError

    key = (kind, str(root))
    cached = _OPENED.get(key)
    try:
        fresh = cached is not None and cached[0].database_mtime == cached[1]
    except SuperminError:
        fresh = False
    if not fresh:
        backend = Backend.open(kind, root=str(root))
        _OPENED[key] = (backend, backend.database_mtime, {p.full_name: p for p in backend.packages()})
    try:
        return _OPENED[key][2][full_name]
    except KeyError:
        error = PackageNotFoundError(
            f"package '{full_name}' is no longer installed in {root} (it was when pickled)"
        )
        error.names = [full_name]
        raise error from None
