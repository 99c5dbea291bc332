"""supermin: build minimal Linux appliances from the host's packages.

The heavy lifting (package databases, dependency resolution, appliance
I/O, writers) is the Rust extension :mod:`supermin._supermin`; this module
adds the two convenience entry points :func:`prepare` and :func:`build`.

>>> import supermin
>>> b = supermin.Backend.detect()
>>> [p.name for p in b.resolve(["bash"])][:3]            # doctest: +SKIP
>>> supermin.build(["bash", "coreutils"], "appliance")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

from ._progress import ProgressCallback, TerminalProgress, resolve_progress
from ._supermin import (
    Appliance,
    ApplianceError,
    Backend,
    BackendError,
    File,
    OutputError,
    Package,
    PackageNotFoundError,
    SuperminError,
    __version__,
    _build,
    _list_drivers,
    _prepare,
)

__all__ = [
    "Appliance",
    "ApplianceError",
    "Backend",
    "BackendError",
    "BuildResult",
    "File",
    "OutputError",
    "Package",
    "PackageNotFoundError",
    "SuperminError",
    "TerminalProgress",
    "__version__",
    "build",
    "list_drivers",
    "prepare",
]

PathLike = Union[str, "os.PathLike[str]"]


def _source_date_epoch() -> Optional[int]:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise SuperminError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, not {value!r}") from None


def prepare(
    packages: Iterable[str],
    output: PathLike,
    *,
    use_installed: bool = False,
    root: PathLike = "/",
    ignore_missing: bool = False,
    packager_config: Optional[PathLike] = None,
    always_download: bool = False,
    lock: Optional[PathLike] = None,
    verbose: int = 0,
    progress: "bool | ProgressCallback | None" = None,
) -> Appliance:
    """Write the supermin appliance of ``packages`` to ``output``.

    Config files come pristine from the installed versions' package files,
    or from the host with ``use_installed=True``.  Host copies whose
    checksum matches the one the package database recorded for the shipped
    file are pristine already and used without a download, unless
    ``always_download``.  Unknown
    packages raise :class:`PackageNotFoundError` unless ``ignore_missing``.
    """
    if isinstance(packages, str):
        packages = [packages]
    _prepare(
        list(packages),
        os.fspath(output),
        use_installed=use_installed,
        root=os.fspath(root),
        ignore_missing=ignore_missing,
        packager_config=None if packager_config is None else os.fspath(packager_config),
        always_download=always_download,
        source_date_epoch=_source_date_epoch(),
        lock=None if lock is None else os.fspath(lock),
        verbose=verbose,
        progress=resolve_progress(progress),
    )
    return Appliance.load(os.fspath(output))


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` produced."""

    output: Path
    format: str
    #: ``if_newer=True`` found the output up to date and did nothing.
    skipped: bool = False
    #: The full dependency closure that was built.
    packages: List[Package] = field(default_factory=list)
    paths: int = 0
    files_copied: int = 0
    bytes_copied: int = 0
    hard_links: int = 0
    #: Host files this user could not read (skipped, never copied empty).
    unreadable: List[Path] = field(default_factory=list)

    def __repr__(self) -> str:
        state = "up to date" if self.skipped else f"{len(self.packages)} packages, {self.paths} paths"
        return f"<BuildResult {self.format} {str(self.output)!r}: {state}>"


def _split_inputs(items: Sequence[object]) -> "tuple[list[str], list[str]]":
    """Appliances and paths are build inputs; plain names are packages."""
    names: List[str] = []
    inputs: List[str] = []
    for item in items:
        if isinstance(item, Appliance):
            inputs.extend(os.fspath(p) for p in item.inputs)
        elif isinstance(item, os.PathLike) or (isinstance(item, str) and os.sep in item):
            inputs.append(os.fspath(item))  # type: ignore[arg-type]
        elif isinstance(item, str):
            names.append(item)
        else:
            raise TypeError(f"expected package names, paths or Appliance objects, not {type(item).__name__}")
    if names and inputs:
        raise SuperminError(
            "build() takes either package names or supermin appliances, not both "
            f"(names: {', '.join(names)}; appliances: {', '.join(inputs)})"
        )
    return names, inputs


def build(
    packages_or_inputs: "Union[str, PathLike, Appliance, Iterable[Union[str, PathLike, Appliance]]]",
    output: PathLike,
    *,
    format: str = "chroot",
    use_installed: bool = True,
    root: PathLike = "/",
    include_packagelist: bool = False,
    ignore_missing: bool = False,
    if_newer: bool = False,
    lock: Optional[PathLike] = None,
    verbose: int = 0,
    progress: "bool | ProgressCallback | None" = None,
) -> BuildResult:
    """Build a full appliance in ``output``.

    ``packages_or_inputs`` is either a list of package names (prepared into
    a temporary supermin appliance first, with config files from the host
    unless ``use_installed=False``) or supermin appliance directories,
    files or :class:`Appliance` objects.  A previous ``output`` is replaced
    only when the new one is complete.
    """
    if isinstance(packages_or_inputs, (str, os.PathLike, Appliance)):
        packages_or_inputs = [packages_or_inputs]
    names, inputs = _split_inputs(list(packages_or_inputs))
    callback = resolve_progress(progress)

    def run(inputs: List[str]) -> BuildResult:
        result = _build(
            inputs,
            os.fspath(output),
            format=format,
            root=os.fspath(root),
            include_packagelist=include_packagelist,
            ignore_missing=ignore_missing,
            if_newer=if_newer,
            lock=None if lock is None else os.fspath(lock),
            verbose=verbose,
            progress=callback,
        )
        return BuildResult(
            output=Path(result["output"]),
            format=result["format"],
            skipped=result["skipped"],
            packages=result["packages"],
            paths=result["paths"],
            files_copied=result["files_copied"],
            bytes_copied=result["bytes_copied"],
            hard_links=result["hard_links"],
            unreadable=[Path(p) for p in result["unreadable"]],
        )

    if not names:
        return run(inputs)
    with tempfile.TemporaryDirectory(prefix="supermin.", dir=os.environ.get("TMPDIR") or "/var/tmp") as tmp:
        supermin_dir = os.path.join(tmp, "supermin.d")
        prepare(
            names,
            supermin_dir,
            use_installed=use_installed,
            root=root,
            ignore_missing=ignore_missing,
            verbose=verbose,
        )
        return run([supermin_dir])


def list_drivers(root: PathLike = "/") -> "list[tuple[str, bool]]":
    """``(system/packager, detected)`` for every package manager supermin knows."""
    return _list_drivers(os.fspath(root))
