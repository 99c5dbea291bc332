"""Type stubs for the Rust extension ``supermin._supermin``."""

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, final

from ._data import ApplianceDiff, Closure, File


_Path = Union[str, "os.PathLike[str]"]
_Progress = Optional[Callable[[str, int, int], None]]

__version__: str
_STAMP_FILE: str
_OUTPUT_DISK_SERIAL: str
_SHARE_TAG: str
__all__ = [
    "__version__",
    "_STAMP_FILE",
    "_OUTPUT_DISK_SERIAL",
    "_SHARE_TAG",
    "SuperminError",
    "UsageError",
    "PackageNotFoundError",
    "ApplianceError",
    "BackendError",
    "KernelError",
    "OutputError",
    "Backend",
    "Package",
    "Appliance",
    "_prepare",
    "_recorded",
    "_os_release_id",
    "_build",
    "_list_drivers",
    "_formats",
    "_pvh_kernel",
    "_private_dir",
    "_run_initrd",
    "_read_outputs",
    "_check_outputs_dir",
    "_database_mtime",
    "_set_messages",
    "_scratch_dir",
    "_Scratch",
    "_Built",
]

class SuperminError(Exception):
    """Base class of every supermin error."""

class UsageError(SuperminError):
    """An argument or option has a value supermin cannot use (an unknown format, package manager, size...)."""

class PackageNotFoundError(SuperminError):
    """Named packages are not installed."""

    names: List[str]

class ApplianceError(SuperminError):
    """A supermin appliance input is malformed."""

    path: Path

class BackendError(SuperminError):
    """The package database, a package file or a package tool failed; see .path (the package file, or None)."""

    path: Optional[Path]

class OutputError(SuperminError):
    """The output cannot be written or replaced."""

    path: Path

class KernelError(SuperminError):
    """No usable kernel, or its modules are missing or unreadable."""

    path: Optional[Path]


@final
class Package:
    """An installed package, or one read from a package file."""

    @staticmethod
    def from_file(path: _Path) -> "Package":
        """A ``.deb``, ``.rpm``, ``.pkg.tar.*`` (pacman) or ``.apk`` file's
        package and the files it would install (kinds and modes from the
        package).  BackendError if the file is none of these, or is corrupt."""
    @property
    def name(self) -> str:
        """The package's name (``bash``)."""
    @property
    def version(self) -> str:
        """Its version as the package manager writes it (``5.2.15-2+b8``)."""
    @property
    def arch(self) -> str:
        """Its architecture (``amd64``, ``x86_64``, ``all``, ``noarch``...)."""
    @property
    def full_name(self) -> str:
        """As upstream prints it: ``name_version_arch`` for dpkg,
        ``name-[epoch:]version-release.arch`` for rpm, ``name-version.arch``
        for pacman and apk."""
    @property
    def depends(self) -> List[str]:
        """Dependency clauses as written (dpkg: Pre-Depends then Depends;
        rpm: the requires, ``name op version``; pacman and apk: ``name[op version]``)."""
    @property
    def license(self) -> Optional[str]:
        """Its licence as the package database records it, or None (dpkg records none)."""
    @property
    def supplier(self) -> Optional[str]:
        """Who supplies it as the database records it (maintainer, vendor, packager), or None."""
    @property
    def packager(self) -> str:
        """The package manager it belongs to: ``dpkg``, ``rpm``, ``pacman`` or ``apk``."""
    @property
    def files(self) -> List[File]:
        """The package's files (:class:`File` values): kinds, modes and
        sizes from the host for an installed package, from the package
        file for one read with :meth:`from_file`."""
    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]: ...
    def _repr_html_(self) -> str: ...

@final
class Backend:
    """A package database under a root."""

    @staticmethod
    def detect(root: _Path = "/", *, tmpdir: Optional[_Path] = None) -> "Backend":
        """The backend of the package manager that manages ``root``.
        ``tmpdir``: where another root's database may be copied to be read
        (default: ``$TMPDIR``, or ``/var/tmp``)."""
    @staticmethod
    def open(kind: str, root: _Path = "/", *, tmpdir: Optional[_Path] = None) -> "Backend":
        """``kind``: ``"dpkg"``, ``"rpm"``, ``"pacman"`` or ``"apk"``; ``tmpdir`` as for :meth:`detect`."""
    @property
    def name(self) -> str:
        """The package manager: ``dpkg``, ``rpm``, ``pacman`` or ``apk``."""
    @property
    def root(self) -> Path:
        """The root whose database this reads."""
    @property
    def database_mtime(self) -> float:
        """When the package database last changed (seconds since the epoch)."""
    def packages(self) -> List[Package]: ...
    def package(self, name: Union[str, Package]) -> Package:
        """Raises PackageNotFoundError when not installed."""
    def resolve(self, names: Sequence[Union[str, Package]], verbose: int = 0) -> Closure:
        """The dependency closure of ``names``, including them, sorted by
        name, with why each is in (``Closure.why``)."""
    def owners(self, path: _Path) -> List[Package]:
        """The installed packages that list ``path``, sorted by name
        (directories resolved inside the root: merged /usr understood)."""
    def owner(self, path: _Path) -> Optional[Package]:
        """The installed package that lists ``path``, or None."""
    def _repr_html_(self) -> str: ...
    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]: ...

@final
class Appliance:
    """The inputs of a build: a supermin appliance directory or files."""

    @staticmethod
    def load(paths: Union[_Path, Sequence[_Path]]) -> "Appliance": ...
    @property
    def inputs(self) -> List[Path]:
        """The files and directories it was read from."""
    @property
    def packages(self) -> List[str]:
        """The package names of its ``packages`` files."""
    @property
    def hostfiles(self) -> List[str]:
        """The glob patterns of its ``hostfiles`` files."""
    @property
    def excludes(self) -> List[str]:
        """The fnmatch patterns of its ``excludefiles``, without the leading ``-``."""
    @property
    def base_images(self) -> List[Path]:
        """Its tarballs, in the order they are unpacked."""
    def files(self, root: _Path = "/", ignore_missing: bool = False) -> List[File]:
        """Every path a build would write, sorted, with its origin."""
    def diff(self, other: "Appliance", root: _Path = "/", ignore_missing: bool = False) -> ApplianceDiff:
        """What a build of ``other`` would write differently from this one."""
    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]: ...
    def build(self, output: _Path, format: str = "chroot", **options: Any) -> Any:
        """Build this appliance; returns a ``supermin.BuildResult``."""
    def _repr_html_(self) -> str: ...

def _prepare(
    packages: List[str],
    output: str,
    *,
    use_installed: bool,
    root: str,
    ignore_missing: bool,
    packager_config: Optional[str],
    always_download: bool,
    source_date_epoch: Optional[int],
    lock: Optional[str],
    verbose: int,
    progress: _Progress,
    backend: Optional[Backend] = None,
    packager: Optional[str] = None,
) -> None: ...
@final
class _Built:
    """What ``_build`` did (``supermin.build`` makes a ``BuildResult``)."""

    @property
    def output(self) -> Path: ...
    @property
    def format(self) -> str: ...
    @property
    def skipped(self) -> bool: ...
    @property
    def rebuilt_because(self) -> List[str]: ...
    @property
    def packages(self) -> List[Package]: ...
    @property
    def paths(self) -> int: ...
    @property
    def files_copied(self) -> int: ...
    @property
    def bytes_copied(self) -> int: ...
    @property
    def hard_links(self) -> int: ...
    @property
    def unreadable(self) -> List[Path]: ...
    @property
    def kernel_version(self) -> Optional[str]: ...
    @property
    def uuid(self) -> Optional[str]: ...
    @property
    def initrd_modules(self) -> List[str]: ...

def _build(
    inputs: List[str],
    output: str,
    *,
    format: str,
    root: str,
    include_packagelist: bool,
    ignore_missing: bool,
    if_newer: bool,
    lock: Optional[str],
    verbose: int,
    progress: _Progress,
    size: Optional[int] = None,
    copy_kernel: bool = False,
    host_cpu: Optional[str] = None,
    modules: Union[str, List[str], None] = None,
    uuid_seed: Optional[str] = None,
    compression: Optional[str] = None,
    source_date_epoch: Optional[int] = None,
    backend: Optional[Backend] = None,
    supermin_kernel: Optional[str] = None,
    supermin_kernel_version: Optional[str] = None,
    supermin_modules: Optional[str] = None,
    invocation: Optional[Tuple[List[str], str, List[Tuple[str, Optional[str]]]]] = None,
    packager: Optional[str] = None,
    kernel_package: Optional[str] = None,
    kernel_cache: Optional[str] = None,
    packager_config: Optional[str] = None,
) -> _Built: ...
def _formats() -> List[Tuple[str, List[str], str, List[str]]]: ...
def _pvh_kernel(kernel: _Path, cache: _Path) -> Tuple[Optional[Path], Optional[str]]: ...
def _private_dir(dir: _Path) -> Optional[str]: ...
def _run_initrd(
    base: _Path,
    dest: _Path,
    command: str,
    files: Sequence[Tuple[_Path, _Path]],
    kernel: _Path,
    *,
    outputs: bool = False,
    share: Optional[_Path] = None,
    modules: Optional[_Path] = None,
) -> None: ...
def _read_outputs(disk: _Path, dest: _Path) -> List[Path]: ...
def _check_outputs_dir(dest: _Path) -> None: ...
def _database_mtime(root: _Path = "/") -> Optional[float]: ...
def _set_messages(sink: Optional[Callable[[bool, str], None]]) -> None: ...
def _list_drivers(root: str = "/") -> List[Tuple[str, bool]]: ...
def _os_release_id(root: _Path) -> Optional[str]: ...
def _recorded(output: _Path, format: str) -> Optional[Tuple[List[Tuple[str, str, str]], Optional[str]]]: ...

@final
class _Scratch:
    @property
    def path(self) -> str: ...
    def close(self) -> None: ...

def _scratch_dir() -> _Scratch: ...
