"""Boot an ext2 appliance in qemu and run one command in it.

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
from typing import Dict, List, Optional

from ._supermin import SuperminError

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
    kernel for the life of the process."""
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
    try:
        r = subprocess.run(
            [qemu, "-accel", "kvm", "-cpu", "host", "-m", "256M", "-display", "none", "-nodefaults",
             "-no-user-config", "-no-reboot", "-serial", "stdio", "-kernel", str(kernel),
             "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    _kvm_works[key] = b"Kernel panic" in r.stdout or b"VFS: Unable to mount root" in r.stdout
    return _kvm_works[key]


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


def qemu_command(
    kernel: Path,
    initrd: Path,
    root: Path,
    *,
    append: str,
    accel: str,
    memory: str = "512M",
    snapshot: bool = True,
) -> List[str]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise BootError("qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86)")
    for path in (kernel, initrd, root):
        os.close(_open_regular(path))
    if accel == "auto":
        accel = "kvm" if kvm_usable(kernel) else "tcg"
    # qemu splits -drive at commas; a comma in a path is written twice.
    drive = str(root).replace(",", ",,")
    cmd = [
        qemu,
        "-accel", accel,
        "-m", memory,
        "-display", "none",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-serial", "stdio",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-drive", f"file={drive},format=raw,if=virtio" + (",snapshot=on" if snapshot else ""),
        "-append", append,
    ]
    if accel == "kvm":
        cmd += ["-cpu", "host"]
    return cmd


def boot(
    kernel: Path,
    initrd: Path,
    root: Path,
    command: Optional[str] = None,
    *,
    timeout: float = 120,
    accel: str = "auto",
    root_device: str = "/dev/vda",
    append: str = "",
    check: bool = True,
    memory: str = "512M",
) -> str:
    """Boot the appliance; return the command's output (or, without a
    command, everything the console printed)."""
    words = ["console=ttyS0", f"root={root_device}", "panic=1", "no_timer_check"]
    if command is not None:
        words += ["quiet", "supermin.run=" + command.encode().hex()]
    if append:
        words.append(append)
    cmdline = " ".join(words)
    if len(cmdline) > 2000:
        raise BootError(f"the command is too long for the kernel command line ({len(command or '')} characters)")
    argv = qemu_command(kernel, initrd, root, append=cmdline, accel=accel, memory=memory)
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        console = (e.stdout or b"").decode(errors="replace").replace("\r", "")
        raise BootError(f"the appliance did not finish within {timeout} s", console) from None
    console = proc.stdout.decode(errors="replace").replace("\r", "")
    if command is None:
        return console
    start = console.find(RUN_BEGIN)
    end = RUN_END.search(console, start if start >= 0 else 0)
    if start < 0 or end is None:
        tail = "\n".join(console.splitlines()[-15:])
        raise BootError(f"the command did not run to completion; the console ended with:\n{tail}", console)
    output = console[start + len(RUN_BEGIN) + 1 : end.start()]
    if output.endswith("\n"):
        output = output[:-1]
    returncode = int(end.group(1))
    if check and returncode != 0:
        raise BootError(f"{command!r} exited with status {returncode}: {output.strip()[-500:]}",
                        console, returncode)
    return output


__all__ = ["BootError", "boot", "filesystem_uuid", "kvm_usable", "qemu_command"]
