"""Boot an ext2 or initramfs appliance in qemu and run one command in it.

The mini init understands ``supermin.run=HEX``: it runs the hex-encoded
command with the appliance's ``/bin/sh`` between two marker lines and
powers off.  Without a command the appliance's own ``/init`` runs, and the
whole console is returned.  qemu gets ``-no-reboot`` and the kernel
``panic=1``, so an appliance whose init exits ends the run instead of
hanging it; a timeout bounds everything else.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ._supermin import SuperminError, _private_dir, _pvh_kernel

RUN_BEGIN = "supermin-run: begin"
RUN_END = re.compile(r"supermin-run: end, exit status (\d+)")


class BootError(SuperminError):
    """The appliance did not boot, or the command failed or timed out.

    ``console`` holds what the serial console printed; ``returncode`` the
    command's exit status when it ran.
    """

    def __init__(self, message: str, console: str = "", returncode: Optional[int] = None):
        super().__init__(message)
        self.console = console
        self.returncode = returncode


_kvm_works: Dict[str, bool] = {}


def kvm_usable(kernel: Path, timeout: float = 10) -> bool:
    """Does ``kernel`` boot under KVM here?  ``/dev/kvm`` being openable is
    not enough: on nested or sandboxed hosts it can start guests that then
    hang while entering long mode.  So the kernel is booted once, with no
    root disk and ``panic=-1``: a working KVM reaches the "no root" panic
    and reboots (qemu exits, ``-no-reboot``) within a second or two; a
    broken one is still silent at the timeout.  The answer is cached per
    kernel for the life of the process, and on disk until the host reboots
    (a process that boots once must not pay the timeout every time)."""
    key = os.path.realpath(kernel)
    if key in _kvm_works:
        return _kvm_works[key]
    _kvm_works[key] = False
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None or os.uname().machine != "x86_64":
        return False
    verdict = _kvm_verdict_file(key, qemu)
    try:
        if verdict is not None:
            with open(verdict, "rb") as f:
                _kvm_works[key] = f.read() == b"1"
            return _kvm_works[key]
    except OSError:
        pass
    try:
        r = subprocess.run(
            [qemu, "-accel", "kvm", "-cpu", "host", "-m", "256M", "-display", "none", "-nodefaults",
             "-no-user-config", "-no-reboot", "-serial", "stdio", "-kernel", str(kernel),
             "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        _save_verdict(verdict, False)  # the case worth remembering
        return False
    except OSError:
        return False
    _kvm_works[key] = b"Kernel panic" in r.stdout or b"VFS: Unable to mount root" in r.stdout
    _save_verdict(verdict, _kvm_works[key])
    return _kvm_works[key]


def _kvm_verdict_file(kernel: str, qemu: str) -> Optional[Path]:
    """Where the verdict for this kernel and qemu lives until the host
    reboots (its boot id is in the name); None when the cache is not
    private (someone else could plant a verdict, or a symlink that sends
    our write elsewhere)."""
    import hashlib

    directory = cache_dir() / "kvm"
    if _private_dir(directory) is not None:
        return None
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip()
    except OSError:
        boot_id = "unknown"
    ident = []
    for path in (kernel, qemu):
        st = os.stat(path)
        ident.append(f"{path}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
    digest = hashlib.sha256("\0".join([boot_id, *ident]).encode()).hexdigest()[:24]
    return directory / digest


def _save_verdict(path: Optional[Path], works: bool) -> None:
    """Write the verdict atomically, owner-only; a cache that cannot be
    written only costs the next process another probe."""
    if path is None:
        return
    try:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(b"1" if works else b"0")
        os.replace(tmp, path)
    except OSError:
        pass


def _open_regular(path: Path) -> int:
    """Open `path` for reading without blocking (a FIFO), and only if it is
    a regular file: an appliance's kernel, initrd and root are files, and a
    symlink to a host disk or device is not one."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BootError(f"{path} is not a regular file (an appliance's kernel, initrd and root are)")
    return fd


def filesystem_uuid(image: Path) -> str:
    """The UUID of an ext2/3/4 image, from its superblock (byte 0x468)."""
    with os.fdopen(_open_regular(image), "rb") as f:
        f.seek(0x468)
        raw = f.read(16).hex()
    return f"{raw[0:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:32]}"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/supermin``, by default ``~/.cache/supermin``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "supermin"


def direct_kernel(kernel: Path) -> Path:
    """The kernel qemu should load: the uncompressed ``vmlinux`` inside
    ``kernel``, entered through its PVH entry point (cached, made once per
    kernel), which skips the firmware's and the kernel's own start-up work
    (half the time to a running init under TCG); or ``kernel`` itself when
    it has no PVH entry or the cache cannot be written."""
    try:
        vmlinux, why = _pvh_kernel(kernel, cache_dir() / "kernels")
    except SuperminError as e:
        why = str(e)
        vmlinux = None
    if vmlinux is None:
        import logging

        logging.getLogger("supermin").debug("booting %s as it is: %s", kernel, why)
        return kernel
    return Path(vmlinux)


def _initrd_sizes(initrd: Path) -> "tuple[int, Optional[int]]":
    """The initrd's size, and that of the archive inside it (see
    :func:`unpacked_size`)."""
    fd = _open_regular(initrd)
    with os.fdopen(fd, "rb") as f:
        head = f.read(18)
        size = os.fstat(f.fileno()).st_size
        if head.startswith(b"070701"):
            return size, size
        if head.startswith(b"\x1f\x8b") and size >= 18:
            f.seek(size - 4)
            return size, int.from_bytes(f.read(4), "little")
    if head.startswith(b"\x28\xb5\x2f\xfd") and len(head) >= 6:
        descriptor = head[4]
        size_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
        at = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
        width = (1 if single_segment else 0, 2, 4, 8)[size_flag]
        if width == 0 or at + width > len(head):
            return size, None
        value = int.from_bytes(head[at:at + width], "little")
        return size, value + 256 if width == 2 else value
    return size, None


def unpacked_size(initrd: Path) -> Optional[int]:
    """The size of the archive inside an initramfs: from zstd's frame
    header (our writer records it), gzip's trailer (modulo 4 GiB), or the
    file's own size when it is not compressed; None when unknown."""
    return _initrd_sizes(initrd)[1]


def default_memory(initrd: Path, root: Optional[Path]) -> int:
    """MiB of guest memory: 512 for an appliance on a disk.  An initramfs
    is unpacked into the kernel's rootfs, a tmpfs that may fill only half
    of the memory, while the compressed archive is still held: twice the
    archive, plus the compressed file, plus 256 to run in (at least 512)."""
    if root is not None:
        return 512
    compressed, unpacked = _initrd_sizes(initrd)
    return max(512, 256 + ((compressed + 2 * (unpacked or 8 * compressed)) >> 20))


def qemu_command(
    kernel: Path,
    initrd: Path,
    root: Optional[Path],
    *,
    append: str,
    accel: str,
    memory: Optional[str] = None,
    snapshot: bool = True,
    direct: bool = True,
    devices: Sequence[str] = (),
) -> List[str]:
    """The qemu command line for an appliance: ``root`` is the ext2 image,
    or None for an initramfs.  ``direct``: load the kernel's ``vmlinux``
    through its PVH entry when it has one (see :func:`direct_kernel`).
    ``devices``: more qemu arguments (a run's output disk and share)."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise BootError("qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86)")
    for path in (kernel, initrd, root):
        if path is not None:
            os.close(_open_regular(path))
    if accel == "auto":
        accel = "kvm" if kvm_usable(kernel) else "tcg"
    cmd = [
        qemu,
        "-accel", accel,
        "-m", memory or f"{default_memory(initrd, root)}M",
        "-display", "none",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-serial", "stdio",
        "-kernel", str(direct_kernel(kernel) if direct else kernel),
        "-initrd", str(initrd),
        "-append", append,
    ]
    if root is not None:
        cmd += ["-drive", f"file={qemu_path(root)},format=raw,if=virtio" + (",snapshot=on" if snapshot else "")]
    if accel == "kvm":
        cmd += ["-cpu", "host"]
    return cmd + list(devices)


def qemu_path(path: "str | os.PathLike[str]") -> str:
    """``path`` inside a qemu option value: qemu splits those at commas, so
    a comma in a path is written twice."""
    return os.fspath(path).replace(",", ",,")


def console_tail(console: str) -> str:
    """The last lines of a console, for an error that says how a boot
    ended."""
    return "\n".join(console.splitlines()[-15:])


def command_line(
    root_device: Optional[str], command: Optional[str] = None, append: str = "", *, from_initrd: bool = False
) -> str:
    """The kernel command line :func:`boot` uses: the serial console, a
    panic ends the run, and the root disk's own modules first (the mini
    init loads the others only if the disk does not appear; upstream's
    init ignores the word).  ``root_device`` None: an initramfs.
    ``from_initrd``: the command is in the initrd (``supermin.run=@``,
    see ``supermin._run``), not on this line."""
    words = ["console=ttyS0", "panic=1", "no_timer_check"]
    if root_device is not None:
        words[1:1] = [f"root={root_device}", "supermin.modules=root"]
    if from_initrd:
        words += ["quiet", "supermin.run=@"]
    elif command is not None:
        words += ["quiet", "supermin.run=" + command.encode().hex()]
    if append:
        words.append(append)
    cmdline = " ".join(words)
    if len(cmdline) > 2000:
        raise BootError(f"the command is too long for the kernel command line ({len(command or '')} characters)")
    return cmdline


def boot(
    kernel: Path,
    initrd: Path,
    root: Optional[Path],
    command: Optional[str] = None,
    *,
    timeout: float = 120,
    accel: str = "auto",
    root_device: Optional[str] = "/dev/vda",
    append: str = "",
    check: bool = True,
    memory: Optional[str] = None,
) -> str:
    """Boot the appliance (``root`` None: an initramfs, with no
    ``root=``); return the command's output (or, without a command,
    everything the console printed)."""
    output, returncode, console = boot_for_status(kernel, initrd, root, command, timeout=timeout, accel=accel,
                                                  root_device=root_device, append=append, memory=memory)
    if check and returncode is not None and returncode != 0:
        raise BootError(f"{command!r} exited with status {returncode}: {output.strip()[-500:]}",
                        console, returncode)
    return output


def boot_for_status(
    kernel: Path,
    initrd: Path,
    root: Optional[Path],
    command: Optional[str],
    *,
    timeout: float,
    accel: str,
    root_device: Optional[str] = "/dev/vda",
    append: str = "",
    memory: Optional[str] = None,
    from_initrd: bool = False,
    devices: Sequence[str] = (),
) -> "tuple[str, Optional[int], str]":
    """:func:`boot`'s work: the command's output, its exit status and the
    whole console (without a command: the console, None, the console)."""
    cmdline = command_line(root_device if root is not None else None, command, append, from_initrd=from_initrd)
    argv = qemu_command(kernel, initrd, root, append=cmdline, accel=accel, memory=memory, devices=devices)
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        console = (e.stdout or b"").decode(errors="replace").replace("\r", "")
        raise BootError(f"the appliance did not finish within {timeout} s", console) from None
    console = proc.stdout.decode(errors="replace").replace("\r", "")
    if command is None:
        return console, None, console
    start = console.find(RUN_BEGIN)
    end = RUN_END.search(console, start if start >= 0 else 0)
    if start < 0 or end is None:
        raise BootError(f"the command did not run to completion; the console ended with:\n{console_tail(console)}",
                        console)
    output = console[start + len(RUN_BEGIN) + 1 : end.start()]
    if output.endswith("\n"):
        output = output[:-1]
    return output, int(end.group(1)), console


__all__ = ["BootError", "boot", "boot_for_status", "cache_dir", "command_line", "console_tail", "qemu_path", "default_memory", "direct_kernel", "filesystem_uuid", "kvm_usable", "qemu_command"]
