"""`run()`: from package names (or supermin appliances) to a command's
output in a VM, in one call, with the built appliance kept in a cache
and reused by the next call.

The command and any input files travel in a small archive appended to
the appliance's initrd for this run (``supermin.run=@``; the kernel
unpacks concatenated archives in turn): no 2,000-byte limit, no device
or driver needed in the guest.  The output comes back over the serial
console between two marker lines, as with :meth:`BuildResult.boot`.
Output files come back as an archive the guest writes onto a disk of
their own (a sparse file here; tens of MB/s under TCG, where the console
moves under 1 MB/s), and a host directory can be shared over 9p; the
drivers for both ride in the same appended archive, so the cached
appliance does not change.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Tuple, Union

from ._api import BuildResult, PathLike, _split_inputs, build, prepare
from ._boot import BootError, boot_for_status, cache_dir, console_tail, default_memory, qemu_path
from ._supermin import (
    Appliance,
    SuperminError,
    UsageError,
    __version__,
    _OUTPUT_DISK_SERIAL,
    _SHARE_TAG,
    _check_outputs_dir,
    _database_mtime,
    _private_dir,
    _read_outputs,
    _run_initrd,
    _scratch_dir,
)

#: The formats ``run()`` boots.
RUN_FORMATS = ("initramfs", "ext2")

#: Where a ``share`` directory is mounted in the guest by default.
SHARE_AT = "/share"

#: The apparent size of the (sparse) output disk: room for the archive of
#: the guest's ``/out``.
OUTPUT_DISK_SIZE = 4 << 30


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` got back."""

    #: What the command printed (stdout and stderr, as the console saw it).
    stdout: str
    returncode: int
    #: Seconds the whole call took (build or cache check, and the boot).
    duration: float
    #: The appliance came from the cache: nothing was built (its stamp
    #: still held; see ``BuildResult.rebuilt_because`` otherwise).
    cached: bool
    #: The appliance that ran, in the cache (None when the cache could not
    #: be used and it was built in a scratch directory, removed since).
    appliance: Optional[BuildResult]
    #: What the command left in the guest's ``/out``, written into the
    #: ``outputs`` directory: paths relative to it, in archive order.
    output_files: Tuple[str, ...] = ()
    #: Why the cached appliance was (re)built (see
    #: :attr:`BuildResult.rebuilt_because`); empty when it was reused.
    rebuilt_because: Tuple[str, ...] = ()


def _cache_key(names: Sequence[str], inputs: Sequence[str], format: str, modules: object) -> str:
    # Imported here: `import supermin` (and so every command line) must not
    # pay for hashlib's OpenSSL, about 40 ms.
    import hashlib
    import json

    material = {"names": sorted(names), "inputs": [os.path.abspath(i) for i in inputs], "format": format,
                "modules": modules, "supermin": __version__}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def run(
    packages_or_appliance: "Union[str, PathLike, Appliance, Iterable[Union[str, PathLike, Appliance]]]",
    command: str,
    *,
    files: Optional[Mapping[str, PathLike]] = None,
    outputs: Optional[PathLike] = None,
    share: "PathLike | Tuple[PathLike, str] | None" = None,
    format: str = "initramfs",
    timeout: float = 300,
    accel: str = "auto",
    check: bool = False,
    modules: "str | Sequence[str] | None" = None,
    verbose: int = 0,
) -> RunResult:
    """Run ``command`` with ``/bin/sh`` in an appliance of
    ``packages_or_appliance`` (package names, or supermin appliance
    directories) booted in qemu, and return its output and exit status.

    The appliance is built into ``$XDG_CACHE_HOME/supermin/appliances``
    (default ``~/.cache/supermin``) and reused while its inputs and the
    package database are unchanged.  ``files`` maps paths in the appliance
    to host files copied there before the command runs (regular files, up
    to 4 GiB each; the guest gets memory for them).  With ``outputs`` (a
    host directory that is missing, empty, or was written by an earlier
    run), what the command leaves in the guest's ``/out`` replaces it
    whole once it has all arrived: directories, files (0644, or 0755 if
    executable), and symlinks that stay inside;
    :attr:`RunResult.output_files` lists them.  ``share`` (a host
    directory, or ``(directory, guest path)``) is mounted read-write over
    9p at ``/share`` (or the guest path); what the guest creates there is
    a plain file of the caller's, mode 0600.  A
    failing command is a result with its ``returncode``; with ``check`` it
    raises :class:`BootError`, as do a timeout and an appliance that does
    not boot (with the console's tail).  ``format``: ``"initramfs"`` (no
    disk) or ``"ext2"``.
    """
    import fcntl

    started = time.monotonic()
    if format not in RUN_FORMATS:
        raise UsageError(f"run() boots {' or '.join(RUN_FORMATS)}, not {format[:64]!r}")
    if isinstance(packages_or_appliance, (str, os.PathLike, Appliance)):
        packages_or_appliance = [packages_or_appliance]
    names, inputs = _split_inputs(list(packages_or_appliance))
    if not names and not inputs:
        raise UsageError("run() needs package names or a supermin appliance")
    guest_files = [(guest, os.fspath(host)) for guest, host in (files or {}).items()]
    if share is not None and isinstance(share, tuple):
        share_dir, share_at = os.fspath(share[0]), share[1]
    elif share is not None:
        share_dir, share_at = os.fspath(share), SHARE_AT
    if share is not None and not os.path.isdir(share_dir):
        raise UsageError(f"share: {share_dir} is not a directory")
    if outputs is not None:
        _check_outputs_dir(outputs)
    scratch = _scratch_dir()
    lock_fd = -1
    try:
        home = cache_dir() / "appliances" / _cache_key(names, inputs, format, modules)
        private = _private_dir(home) is None
        if not private:
            # Someone else could change it: build afresh, privately.
            home = Path(scratch.path) / "appliance"
            home.mkdir()
        # Exclusive while deciding and (re)building; shared while booting,
        # so that no other run replaces the files this one boots.
        lock_fd = os.open(home.parent / f"{home.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        fresh = True  # the prepared appliance (names) is current
        if names:
            prepared = home / "supermin.d"
            # From the database files' times alone (nothing parsed): an
            # unrelated install re-prepares, and the build's stamp then
            # finds the same appliance by content.
            changed = _database_mtime()
            fresh = prepared.is_dir() and changed is not None and prepared.stat().st_mtime >= changed
            if not fresh:
                prepare(names, prepared, use_installed=True, verbose=verbose)
            inputs = [os.fspath(prepared)]
        appliance = build(inputs, home / "out", format=format, if_newer=True, modules=modules, verbose=verbose)
        fcntl.flock(lock_fd, fcntl.LOCK_SH)
        assert appliance.kernel is not None and appliance.initrd is not None
        initrd = Path(scratch.path) / "initrd"
        _run_initrd(appliance.initrd, initrd, command, guest_files, appliance.kernel, outputs=outputs is not None,
                    share=share_at if share is not None else None, modules=os.environ.get("SUPERMIN_MODULES"))
        devices = []
        if outputs is not None:
            disk = Path(scratch.path) / "outputs"
            with open(disk, "wb") as f:
                f.truncate(OUTPUT_DISK_SIZE)
            # In the last PCI slots: the guest names virtio disks in slot
            # order, and an ext2 root must stay /dev/vda.
            # A full host disk is an I/O error in the guest, not a paused VM.
            devices += ["-drive", f"file={qemu_path(disk)},format=raw,if=none,id=outputs,"
                        "werror=report,rerror=report",
                        "-device", f"virtio-blk-pci,drive=outputs,serial={_OUTPUT_DISK_SERIAL},addr=0x1f"]
        if share is not None:
            # mapped-xattr: what the guest creates is a plain file of the
            # caller's, mode 0600 (its owner and mode live in attributes):
            # never a set-id file or a device node on the host.
            devices += ["-fsdev", f"local,id=share,path={qemu_path(os.path.abspath(share_dir))},"
                        "security_model=mapped-xattr",
                        "-device", f"virtio-9p-pci,fsdev=share,mount_tag={_SHARE_TAG},addr=0x1e"]
        # The appliance's own need, plus the inputs twice (in the initrd's
        # archive and copied into the tree).
        inputs_size = sum(os.stat(host).st_size for _, host in guest_files)
        memory = default_memory(appliance.initrd, appliance.root) + (2 * inputs_size >> 20)
        output, returncode, console = boot_for_status(
            appliance.kernel, initrd, appliance.root, command, timeout=timeout, accel=accel, from_initrd=True,
            memory=f"{memory}M", devices=devices,
        )
        written: "list[Path]" = []
        if outputs is not None:
            with open(disk, "rb") as f:
                sent = f.read(6) == b"070701"
            if not sent:
                raise BootError("the appliance sent no output files; the console ended with:\n"
                                + console_tail(console), console, returncode)
            written = _read_outputs(disk, outputs)
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)
        scratch.close()
    assert returncode is not None
    if check and returncode != 0:
        raise BootError(f"the command exited with status {returncode}: {output.strip()[-500:]}", console,
                        returncode)
    return RunResult(stdout=output, returncode=returncode, duration=time.monotonic() - started,
                     cached=appliance.skipped, appliance=appliance if private else None,
                     output_files=tuple(str(p) for p in written), rebuilt_because=appliance.rebuilt_because)


__all__ = ["RUN_FORMATS", "SHARE_AT", "RunResult", "run"]
