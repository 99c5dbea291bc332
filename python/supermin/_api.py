"""The Python API behind :mod:`supermin`: :func:`prepare`, :func:`build`,
:class:`BuildResult` and their helpers, over the Rust extension
:mod:`supermin._supermin`.  Import from :mod:`supermin`, not from here.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from . import _sbom
from ._boot import BootError
from ._boot import boot as _boot
from ._boot import cache_dir as _cache_dir
from ._boot import filesystem_uuid
from ._progress import ProgressCallback, TerminalProgress, resolve_progress
from ._supermin import _recorded as _stamp_record
from ._supermin import (
    Appliance,
    ApplianceError,
    Backend,
    BackendError,
    KernelError,
    OutputError,
    Package,
    PackageNotFoundError,
    SuperminError,
    UsageError,
    _STAMP_FILE,
    __version__,
    _build,
    _formats,
    _list_drivers,
    _prepare,
    _scratch_dir,
    _set_messages,
)


PathLike = Union[str, "os.PathLike[str]"]


class SuperminWarning(UserWarning):
    """Something supermin skipped or changed while it went on (unreadable
    host files, device nodes a non-root chroot cannot hold, ...)."""


def _route_message(warning: bool, text: str) -> None:
    """The core's messages, from a Python caller's point of view: warnings
    are :class:`SuperminWarning` (so filters apply, and ``"error"`` stops
    the build), ``verbose`` messages go to the ``supermin`` logger, or to
    stderr as ``supermin: TEXT`` when logging is not set up."""
    if warning:
        warnings.warn(text, SuperminWarning, stacklevel=2)
        return
    # Imported here: the command line never needs it (it prints itself),
    # and importing it costs every run a few milliseconds.
    import logging

    log = logging.getLogger("supermin")
    if log.hasHandlers():
        log.info(text)
    else:
        sys.stderr.write(f"supermin: {text}\n")


_set_messages(_route_message)

#: ``{name or alias: name}`` of every output format, from the core's
#: registry: ``"fs"`` and ``"filesystem"`` mean ``"chroot"``.
_FORMAT_NAMES = {alias: name for name, aliases, _, _ in _formats() for alias in (name, *aliases)}
#: The output formats ``build(format=...)`` takes.
FORMATS: "tuple[str, ...]" = tuple(dict.fromkeys(_FORMAT_NAMES.values()))


def _source_date_epoch() -> Optional[int]:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, not {value!r}") from None


#: The environment variables a build reads (recorded with the command line
#: in the --if-newer stamp's quick record, see ``supermin.cli``).
_ENVIRONMENT = ("SOURCE_DATE_EPOCH", "SUPERMIN_KERNEL", "SUPERMIN_KERNEL_VERSION", "SUPERMIN_MODULES")


def _recorded(invocation: "Optional[tuple]") -> "Optional[tuple]":
    """A command line's ``(args, cwd, [(name, value)])`` with the build's
    own environment added, for the stamp's quick record; None if any of it
    is not text that UTF-8 can carry (undecodable bytes on a command line)."""
    if invocation is None:
        return None
    args, cwd, env = invocation
    env = [*env, *((name, os.environ.get(name)) for name in _ENVIRONMENT)]
    try:
        for text in [*args, cwd, *(v for _, v in env if v is not None)]:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return (args, cwd, env)


def _kernel_overrides() -> "dict[str, Optional[str]]":
    """``SUPERMIN_KERNEL``, ``SUPERMIN_KERNEL_VERSION`` and
    ``SUPERMIN_MODULES``, read here once (empty means unset, as upstream)."""
    return {
        key.lower(): os.environ.get(key) or None
        for key in ("SUPERMIN_KERNEL", "SUPERMIN_KERNEL_VERSION", "SUPERMIN_MODULES")
    }


_SIZE = re.compile(r"(\d+(?:\.\d+)?)([bKMG]?)")


def parse_size(size: "int | str") -> int:
    """Upstream's ``--size`` syntax: a number with an optional suffix, ``b``
    (512-byte blocks), ``K``, ``M`` or ``G`` (powers of 1024), e.g. ``500M``
    or ``1.5G``; no suffix means bytes.  An int is taken as bytes."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        m = _SIZE.fullmatch(str(size).strip())
        if not m or float(m.group(1)) <= 0:
            raise UsageError(f"cannot parse size field '{size}' (use e.g. 500M or 1.5G)")
        scale = {"": 1, "b": 512, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
        number = m.group(1)
        # Whole numbers exactly (a float loses digits past 2**53).
        value = int(number) * scale if "." not in number else int(float(number) * scale)
    if value <= 0:
        raise UsageError(f"size must be positive, not {size}")
    if value >= 1 << 64:
        raise UsageError(f"size {size} is too large (ext2 allows at most 16T)")
    return value


def _package_names(packages: "Union[str, Package, Iterable[Union[str, Package]]]") -> List[str]:
    """Names, given as names or as :class:`Package` objects."""
    if isinstance(packages, (str, Package)):
        packages = [packages]
    names = []
    for p in packages:
        if isinstance(p, Package):
            names.append(p.name)
        elif isinstance(p, str):
            names.append(p)
        else:
            raise UsageError(f"expected package names or Package objects, not {type(p).__name__}")
    return names


def _config_path(path: Optional[PathLike]) -> Optional[str]:
    """A ``packager_config`` as an absolute path: the tools it is handed
    to may run in another directory (apk opens it relative to its root)."""
    return None if path is None else os.path.abspath(os.fspath(path))


def prepare(
    packages: "Union[str, Package, Iterable[Union[str, Package]]]",
    output: PathLike,
    *,
    use_installed: bool = False,
    root: PathLike = "/",
    backend: Optional[Backend] = None,
    packager: Optional[str] = None,
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
    ``backend`` (an opened :class:`Backend`, e.g. ``Backend.open("rpm",
    root=R)``) is used instead of detecting the package manager of ``root``;
    or ``packager`` (``"dpkg"``, ``"rpm"``, ``"pacman"``, ``"apk"``) names the kind to open there.
    Packages are names or :class:`Package` objects.
    """
    names = _package_names(packages)
    _check_backend(root, backend, packager)
    _prepare(
        names,
        os.fspath(output),
        use_installed=use_installed,
        root=os.fspath(root),
        ignore_missing=ignore_missing,
        packager_config=_config_path(packager_config),
        always_download=always_download,
        source_date_epoch=_source_date_epoch(),
        lock=None if lock is None else os.fspath(lock),
        verbose=verbose,
        progress=resolve_progress(progress),
        backend=backend,
        packager=packager,
    )
    return Appliance.load(os.fspath(output))


def _check_backend(root: PathLike, backend: "Optional[Backend]", packager: Optional[str] = None) -> None:
    if backend is not None and os.fspath(root) != "/":
        raise UsageError("give root or backend, not both: the backend has its root")
    if backend is not None and packager is not None:
        raise UsageError("give packager or backend, not both: the backend has its kind")


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` produced."""

    output: Path
    format: str
    #: ``if_newer=True`` found the output up to date and did nothing.
    skipped: bool = False
    #: Why ``if_newer=True`` rebuilt: ``("output missing",)``,
    #: ``("libc6 2.36-9+deb12u7 → 2.36-9+deb12u9",)``, ``("options
    #: changed",)``, ``("/path/sd/hostfiles changed",)``, ``("kernel A →
    #: B",)``...; empty when skipped or built without ``if_newer``.
    rebuilt_because: Tuple[str, ...] = ()
    #: The full dependency closure that was built.
    packages: List[Package] = field(default_factory=list)
    paths: int = 0
    files_copied: int = 0
    bytes_copied: int = 0
    hard_links: int = 0
    #: Host files this user could not read (skipped, never copied empty).
    unreadable: List[Path] = field(default_factory=list)
    #: Bootable formats: ``OUT/kernel`` and ``OUT/initrd``; ext2 also
    #: ``OUT/root``; tar: ``root`` is ``OUT/root.tar``.
    kernel: Optional[Path] = None
    initrd: Optional[Path] = None
    root: Optional[Path] = None
    #: Bootable formats: the kernel's version; ext2: the root filesystem's
    #: UUID and the modules the initrd loads, in order.
    kernel_version: Optional[str] = None
    uuid: Optional[str] = None
    initrd_modules: List[str] = field(default_factory=list)
    #: The ``ID`` of the root's os-release (``debian``): the namespace of
    #: the packages' URLs in :meth:`sbom`.
    distribution: Optional[str] = None

    def sbom(self, format: str = "spdx") -> str:
        """An SBOM of the packages in this appliance, as JSON text:
        ``"spdx"`` (SPDX 2.3) or ``"cyclonedx"`` (CycloneDX 1.5).  Each
        package has its name, version, architecture, supplier and licence
        where the package database records them, and a package URL
        (``pkg:deb/debian/bash@5.2.15-2+b8?arch=amd64``).  The same
        packages and ``SOURCE_DATE_EPOCH`` give the same bytes."""
        format = _sbom.format_for("", format)
        if not self.packages:
            raise UsageError(f"{self.output}: no packages known for an SBOM (skipped by if_newer, or described "
                             "with from_output without a /packagelist)")
        return _sbom.render(format, f"supermin appliance {self.output.name}", self.packages, self.distribution,
                            epoch=_source_date_epoch())

    def write_sbom(self, path: PathLike, format: Optional[str] = None) -> Path:
        """Write :meth:`sbom` to ``path`` (replaced whole: written beside
        it, then renamed); the format from its name (``*.spdx.json``,
        ``*.cdx.json``) unless given."""
        import tempfile

        target = Path(os.fspath(path))
        text = self.sbom(_sbom.format_for(str(target), format))
        staged = None
        try:
            # A new file of a name nobody can guess or plant a link at
            # (O_EXCL), renamed over the target: never written through a
            # symlink, never seen half-written.
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
            staged = Path(name)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                mask = os.umask(0)
                os.umask(mask)
                os.fchmod(f.fileno(), 0o666 & ~mask)
            os.replace(staged, target)
        except OSError as e:
            if staged is not None:
                staged.unlink(missing_ok=True)
            error = OutputError(f"{target}: cannot write the SBOM: {e.strerror or e}")
            error.path = target
            raise error from None
        return target

    @classmethod
    def from_output(cls, output: PathLike, root: PathLike = "/") -> "BuildResult":
        """Describe an existing build output (e.g. to :meth:`boot` it): ext2
        when it holds ``kernel``, ``initrd`` and ``root``, initramfs when it
        holds ``kernel`` and ``initrd`` alone, tar when it holds only
        ``root.tar``, else chroot.  What the output records is read back:
        its packages (from the ``--if-newer`` stamp every build leaves, or
        a chroot's ``/packagelist``), found in ``root``'s database, and the
        kernel's version."""
        out = Path(os.fspath(output)).absolute()
        if not out.is_dir():
            error = OutputError(f"{out}: not a build output directory")
            error.path = out
            raise error
        if all((out / name).exists() for name in ("kernel", "initrd", "root")):
            format = "ext2"
        else:
            names = sorted(p.name for p in out.iterdir() if p.name != _STAMP_FILE)
            format = {"initrd kernel": "initramfs", "root.tar": "tar"}.get(" ".join(names), "chroot")
        recorded, kernel_version = _recorded_build(out, format)
        bootable = format in ("ext2", "initramfs")
        return cls(
            output=out,
            format=format,
            kernel=out / "kernel" if bootable else None,
            initrd=out / "initrd" if bootable else None,
            root=out / "root" if format == "ext2" else out / "root.tar" if format == "tar" else None,
            uuid=filesystem_uuid(out / "root") if format == "ext2" else None,
            packages=_installed(recorded, root) if recorded else [],
            kernel_version=kernel_version,
            distribution=_sbom.distribution(os.fspath(root)),
        )

    def boot(
        self,
        command: Optional[str] = None,
        *,
        timeout: float = 120,
        accel: str = "auto",
        root: str = "/dev/vda",
        append: str = "",
        check: bool = True,
        memory: Optional[str] = None,
    ) -> str:
        """Boot this ext2 or initramfs appliance in qemu and return
        ``command``'s output.

        The command runs with the appliance's ``/bin/sh`` in place of its
        ``/init``; without one, the appliance's ``/init`` runs and the whole
        console output is returned.  ext2: ``root`` is ``/dev/vda`` or
        ``"uuid"`` (``root=UUID=<this image's UUID>``), and the root image
        is opened read-only (qemu ``snapshot=on``); an initramfs needs no
        disk.  ``accel="auto"`` uses KVM when a test guest really runs under
        it, else TCG.  ``memory`` (qemu's ``-m``) defaults to 512M, more
        for an initramfs, which is unpacked into memory.  Raises
        :class:`BootError` on a timeout, a boot failure, or (with
        ``check``) a non-zero exit.
        """
        bootable = self.kernel is not None and self.initrd is not None
        if self.format == "ext2" and bootable and self.root is not None:
            root_device: Optional[str] = (
                f"UUID={self.uuid or filesystem_uuid(self.root)}" if root == "uuid" else root
            )
            disk: Optional[Path] = self.root
        elif self.format == "initramfs" and bootable:
            root_device, disk = None, None
        else:
            raise UsageError(f"boot() needs an ext2 or initramfs appliance; {self.output} is {self.format}")
        assert self.kernel is not None and self.initrd is not None
        return _boot(self.kernel, self.initrd, disk, command, timeout=timeout, accel=accel,
                     root_device=root_device, append=append, check=check, memory=memory)

    def __repr__(self) -> str:
        if self.skipped:
            state = "up to date"
        elif self.paths:
            state = f"{len(self.packages)} packages, {self.paths} paths"
        else:  # described by from_output: what the output records
            state = f"{len(self.packages)} packages"
        return f"<BuildResult {self.format} {str(self.output)!r}: {state}>"

    def _repr_html_(self) -> str:
        from . import _html

        return _html.build_result(self)


def _recorded_build(out: Path, format: str) -> "Tuple[List[Tuple[str, str, str]], Optional[str]]":
    """``(name, version, arch)`` of the packages and the kernel version an
    output records: its stamp (read by the core, as ``--if-newer`` reads
    it), else a chroot's ``/packagelist`` full names."""
    recorded = _stamp_record(os.fspath(out), format)
    if recorded is not None and recorded[0]:
        return recorded[0], recorded[1]
    kernel_version = recorded[1] if recorded else None
    return [("", name, "") for name in _read_packagelist(out)], kernel_version


def _read_packagelist(out: Path, limit: int = 8 << 20) -> List[str]:
    """``OUT/packagelist``'s names: opened without following a link or
    waiting on a FIFO, a regular file only, at most ``limit`` bytes read."""
    import stat

    try:
        fd = os.open(out / "packagelist", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return []
        data = f.read(limit + 1)
    if len(data) > limit:
        return []
    return data.decode("utf-8", errors="replace").split()


def _installed(recorded: "List[Tuple[str, str, str]]", root: PathLike) -> List[Package]:
    """The recorded packages as ``root``'s database has them (those no
    longer installed at that version are left out)."""
    try:
        backend = Backend.detect(os.fspath(root))
    except SuperminError:
        return []
    by_triple = {}
    by_full = {}
    for p in backend.packages():
        by_triple[(p.name, p.version, p.arch)] = p
        by_full[p.full_name] = p
    found = {}
    for name, version, arch in recorded:
        p = by_triple.get((name, version, arch)) if name else by_full.get(version)
        if p is not None:
            found[p.full_name] = p
    return sorted(found.values(), key=lambda p: (p.name, p.arch))


def _split_inputs(items: Sequence[object]) -> "tuple[list[str], list[str]]":
    """Appliances and paths are build inputs; plain names are packages."""
    names: List[str] = []
    inputs: List[str] = []
    for item in items:
        if isinstance(item, Appliance):
            inputs.extend(os.fspath(p) for p in item.inputs)
        elif isinstance(item, Package):
            names.append(item.name)
        elif isinstance(item, os.PathLike) or (isinstance(item, str) and os.sep in item):
            inputs.append(os.fspath(item))  # type: ignore[arg-type]
        elif isinstance(item, str):
            names.append(item)
        else:
            raise UsageError(
                f"expected package names, Package objects, paths or Appliance objects, not {type(item).__name__}"
            )
    if names and inputs:
        raise UsageError(
            "build() takes either package names or supermin appliances, not both "
            f"(names: {', '.join(names)}; appliances: {', '.join(inputs)})"
        )
    return names, inputs


def build(
    packages_or_inputs: "Union[str, PathLike, Package, Appliance, Iterable[Union[str, PathLike, Package, Appliance]]]",
    output: PathLike,
    *,
    format: str = "chroot",
    use_installed: bool = True,
    root: PathLike = "/",
    backend: Optional[Backend] = None,
    packager: Optional[str] = None,
    include_packagelist: bool = False,
    ignore_missing: bool = False,
    if_newer: bool = False,
    lock: Optional[PathLike] = None,
    verbose: int = 0,
    progress: "bool | ProgressCallback | None" = None,
    size: "int | str | None" = None,
    copy_kernel: bool = False,
    host_cpu: Optional[str] = None,
    modules: "str | Sequence[str] | None" = None,
    uuid_seed: Optional[str] = None,
    compression: Optional[str] = None,
    kernel_package: "str | PathLike | None" = None,
    packager_config: Optional[PathLike] = None,
    _invocation: "Optional[tuple]" = None,
) -> BuildResult:
    """Build a full appliance in ``output``.

    ``packages_or_inputs`` is either a list of package names (prepared into
    a temporary supermin appliance first, with config files from the host
    unless ``use_installed=False``) or supermin appliance directories,
    files or :class:`Appliance` objects.  A previous ``output`` is replaced
    only when the new one is complete.

    ``format`` is one of :data:`FORMATS` (``"chroot"``: the tree as a
    directory; ``"tar"``: ``OUT/root.tar``, a deterministic archive for
    ``podman import``; ``"ext2"`` and ``"initramfs"``: bootable).
    ``format="ext2"`` writes ``kernel``, ``initrd`` and a sparse ``root``
    image of ``size`` (default 4 GiB; ``"500M"`` style strings accepted).
    ``format="initramfs"`` writes ``kernel`` and an ``initrd`` holding the
    whole appliance, booted with no disk, compressed with ``compression``
    (``"zstd"``, ``"gzip"`` or ``"none"``; default: zstd if the kernel's
    config says it unpacks it, else gzip).  ``modules`` says what goes into
    ``/lib/modules/VERSION``: every module (``"all"``, ext2's default, as
    upstream), the boot modules plus the named ones (``["fuse",
    "e1000*"]``; ``[]`` for the boot modules alone), or nothing
    (``"none"``, initramfs' default: it has no disk to find, and every
    byte of it is unpacked into memory at each boot).
    ``uuid_seed`` makes the filesystem UUID, and with ``SOURCE_DATE_EPOCH``
    the whole image, reproducible.  The kernel is found as upstream finds
    it (``SUPERMIN_KERNEL``, ``SUPERMIN_MODULES`` override); on a host
    with none (a container, WSL, a CI runner) it comes from the
    distribution's kernel package (``linux-image-amd64``, ``kernel-core``
    and ``kernel-modules-core``, ``linux``, ``linux-virt``), downloaded and unpacked once
    into ``$XDG_CACHE_HOME/supermin/kernel-packages``; ``kernel_package``
    names that package (comma-separated names) or a package file to
    unpack (``.deb``, ``.rpm``, ``.pkg.tar.*``, ``.apk``) whatever the host has, and
    ``packager_config`` configures the download.  ``backend``
    (an opened :class:`Backend`) is used instead of detecting the package
    manager of ``root``; or ``packager`` names its kind (``"dpkg"``,
    ``"rpm"``, ``"pacman"``, ``"apk"``), as ``--packager`` does.
    """
    _check_backend(root, backend, packager)
    if format not in _FORMAT_NAMES:
        raise UsageError(f"unknown format {format[:64]!r}: use {', '.join(FORMATS)}")
    format = _FORMAT_NAMES[format]
    module_choice: "str | List[str] | None"
    if isinstance(modules, str):
        if modules not in ("all", "none"):
            raise UsageError(f"modules must be 'all', 'none' or a list of module names, not {modules!r}")
        module_choice = modules
    else:
        module_choice = None if modules is None else list(modules)
    size_bytes = None if size is None else parse_size(size)
    if isinstance(packages_or_inputs, (str, os.PathLike, Package, Appliance)):
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
            size=size_bytes,
            copy_kernel=copy_kernel,
            host_cpu=host_cpu,
            modules=module_choice,
            uuid_seed=uuid_seed,
            compression=compression,
            source_date_epoch=_source_date_epoch(),
            backend=backend,
            **_kernel_overrides(),
            # (The command line's own args and directory: the stamp's quick
            # record for the native launcher.)
            invocation=_recorded(_invocation),
            packager=packager,
            kernel_package=None if kernel_package is None else os.fspath(kernel_package),
            kernel_cache=str(_cache_dir() / "kernel-packages"),
            packager_config=_config_path(packager_config),
        )
        out = Path(result.output)
        ext2 = result.format == "ext2"
        bootable = ext2 or result.format == "initramfs"
        tar = result.format == "tar"
        return BuildResult(
            output=out,
            format=result.format,
            skipped=result.skipped,
            rebuilt_because=tuple(result.rebuilt_because),
            packages=list(result.packages),
            paths=result.paths,
            files_copied=result.files_copied,
            bytes_copied=result.bytes_copied,
            hard_links=result.hard_links,
            unreadable=[Path(p) for p in result.unreadable],
            kernel=out / "kernel" if bootable else None,
            initrd=out / "initrd" if bootable else None,
            root=out / "root" if ext2 else out / "root.tar" if tar else None,
            kernel_version=result.kernel_version,
            uuid=result.uuid,
            initrd_modules=list(result.initrd_modules),
            distribution=_sbom.distribution(os.fspath(root) if backend is None else os.fspath(backend.root)),
        )

    if not names:
        return run(inputs)
    # Rust's scratch directory (not tempfile's): it is locked while in use,
    # so one left by a killed process is removed by the next supermin run.
    scratch = _scratch_dir()
    try:
        supermin_dir = os.path.join(scratch.path, "supermin.d")
        try:
            prepare(
                names,
                supermin_dir,
                use_installed=use_installed,
                root=root,
                backend=backend,
                packager=packager,
                ignore_missing=ignore_missing,
                verbose=verbose,
                progress=callback,
            )
        except PackageNotFoundError as e:
            _hint_directories(e)
            raise
        return run([supermin_dir])
    finally:
        scratch.close()


def _hint_directories(error: PackageNotFoundError) -> None:
    """A "package" that is a directory here is most likely an appliance
    directory given as a bare name: say so in the message."""
    dirs = [n for n in getattr(error, "names", []) if os.path.isdir(n)]
    if dirs:
        error.args = (
            f"{error.args[0] if error.args else error}; did you mean the appliance directory ./{dirs[0]}? "
            "pass a path with a slash or a pathlib.Path",
        )


def list_drivers(root: PathLike = "/") -> "list[tuple[str, bool]]":
    """``(system/packager, detected)`` for every package manager supermin knows."""
    return _list_drivers(os.fspath(root))
