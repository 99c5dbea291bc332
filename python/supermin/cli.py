"""The ``supermin`` command line, compatible with upstream supermin 5.

    supermin --prepare PACKAGE... -o OUTPUTDIR
    supermin --build -f FORMAT INPUT... -o OUTPUTDIR

Errors print ``supermin: MESSAGE`` and exit 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import List, NoReturn, Optional

from . import _sbom
from ._api import _FORMAT_NAMES, FORMATS, BuildResult, _route_message, build, list_drivers, parse_size, prepare
from ._supermin import SuperminError, __version__
from ._supermin import _formats, _set_messages

_DTB_REMOVED = """\
*** error: The --dtb option was removed in supermin 5.1.18.

Normally you can just drop this option and the wildcard following
it.  Modern QEMU will generate a correct DTB for the supermin
appliance automatically."""

_SUPERMIN_4 = """\
*** error: This is supermin version 5.
supermin: *** It looks like you are looking for supermin version 4.

This version of supermin will not work.  You need to find the old version
or upgrade to libguestfs >= 1.26."""


class _Fail(Exception):
    pass


class _Terminated(Exception):
    """Raised by the SIGTERM handler: it cancels a running build exactly as
    Ctrl-C does (the core stops, removes its staging directory and keeps the
    previous output)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Fail(message)


_EPILOG = """\
examples:
  supermin --prepare bash coreutils -o sd          a supermin appliance (pristine config files)
  supermin --build -f chroot sd -o appliance       a chroot of the host's installed files
  supermin --build -f ext2 sd -o app --modules boot
                                                   kernel + initrd + root, bootable in qemu
  supermin --run "uname -r" bash coreutils         build, boot and run a command in a VM
  supermin --root /srv/fedora --prepare bash -o sd --use-installed
                                                   another root's packages and config files

environment:
  SUPERMIN_KERNEL          the kernel to use (bootable formats), instead of the search
  SUPERMIN_KERNEL_VERSION  its version, when it cannot be read from the image
  SUPERMIN_MODULES         its module tree (default /lib/modules/VERSION)
  SOURCE_DATE_EPOCH        timestamps for reproducible output (byte-identical packages,
                           base.tar.gz, initrd and root)
  XDG_CACHE_HOME           where kernels from packages are kept (supermin/kernel-packages)
"""


def _parser() -> _Parser:
    p = _Parser(
        prog="supermin",
        usage="supermin --prepare PACKAGE... -o OUTPUTDIR\n       supermin --build -f FORMAT INPUT... -o OUTPUTDIR",
        description="Build minimal Linux appliances from the host's package database.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--prepare", dest="mode", action="store_const", const="prepare", help="Prepare a supermin appliance")
    mode.add_argument("--build", dest="mode", action="store_const", const="build", help="Build a full appliance")
    mode.add_argument(
        "--run",
        metavar="COMMAND",
        help="Run COMMAND in a VM booted from an appliance of PACKAGE... (or supermin appliances), "
        "built into ~/.cache/supermin and reused; print its output and exit with its status "
        "(-f initramfs, the default, or ext2; with -o DIR, what COMMAND leaves in /out is copied to DIR)",
    )
    formats = "; ".join(
        f"{name} ({', '.join(aliases)}): {summary}" if aliases else f"{name}: {summary}"
        for name, aliases, summary, _ in _formats()
    )
    p.add_argument("-f", "--format", metavar="FORMAT", help=f"Set output format: {formats}")
    p.add_argument("-o", dest="output", metavar="OUTPUTDIR", help="Set output directory")
    p.add_argument("--if-newer", action="store_true", help="Only build if needed")
    p.add_argument("--lock", metavar="LOCKFILE", help="Use a lock file (POSIX fcntl lock)")
    p.add_argument("--use-installed", action="store_true", help="Use installed files instead of accessing network")
    p.add_argument("--include-packagelist", action="store_true", help="Add a file with the list of packages")
    p.add_argument(
        "--packager-config",
        metavar="CONFIGFILE",
        help="Set packager config file (apt, dnf/zypper, pacman.conf; apk: a repositories file or an /etc/apk-like "
        "directory); the only configuration used to download for another --root",
    )
    p.add_argument(
        "--sbom",
        metavar="FILE",
        help="Write an SBOM of the appliance's packages to FILE (build): SPDX 2.3 JSON for *.spdx.json, "
        "CycloneDX 1.5 JSON for *.cdx.json",
    )
    p.add_argument("--sbom-format", choices=_sbom.FORMATS, help="The SBOM format, whatever FILE is called")
    p.add_argument("--list-drivers", action="store_true", help="Display list of drivers and exit")
    p.add_argument("--host-cpu", metavar="ARCH", help="Set host CPU architecture (ext2)")
    p.add_argument("--size", metavar="SIZE", help="Set the size of the ext2 filesystem (e.g. 4G)")
    p.add_argument("--copy-kernel", action="store_true", help="Copy kernel instead of symlinking (ext2)")
    p.add_argument(
        "--kernel-package",
        metavar="NAME|FILE",
        help="Take the kernel and its modules from this distribution package (names, comma-separated, "
        "downloaded; or a .deb/.rpm/.pkg.tar.*/.apk file) instead of the host's; without it, a host with no "
        "kernel takes the distribution's own (bootable formats)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="Enable debugging messages (repeatable)")
    p.add_argument("-V", "--version", action="store_true", help="Display version and exit")
    p.add_argument("--dtb", metavar="WILDCARD", help="Obsolete option, do not use")
    p.add_argument("--names", action="store_true", help="Give an error for people needing supermin 4")
    # Beyond upstream.
    p.add_argument("--root", default="/", metavar="DIR", help="Read the package database and files of another root")
    p.add_argument(
        "--packager",
        metavar="KIND",
        help="The package manager whose database to read, as --list-drivers names it after the slash "
        "(default: the one /etc/os-release names, else the only database there)",
    )
    p.add_argument(
        "--ignore-missing",
        action="store_true",
        help="Warn about packages that are not installed instead of failing (upstream's behaviour)",
    )
    p.add_argument(
        "--always-download",
        action="store_true",
        help="Download every package with config files, even when the host copies are verified pristine",
    )
    p.add_argument("--progress", action="store_true", help="Show a progress bar on a terminal")
    p.add_argument(
        "--modules",
        metavar="all|none|boot[,NAME...]",
        help="Kernel modules in the appliance: all (ext2's default, as upstream), none (initramfs' "
        "default), or only the boot modules plus the named ones, e.g. boot,fuse,e1000*",
    )
    p.add_argument(
        "--compression",
        choices=["zstd", "gzip", "none"],
        help="Compression of an initramfs (default: zstd if the kernel unpacks it, else gzip)",
    )
    p.add_argument(
        "--uuid-seed",
        metavar="STRING",
        help="Derive the ext2 filesystem UUID from STRING (with SOURCE_DATE_EPOCH: reproducible images)",
    )
    p.add_argument(
        "--share",
        metavar="DIR[:GUEST]",
        help="With --run: mount the host directory DIR read-write in the VM at GUEST (default /share)",
    )
    p.add_argument("args", nargs="*", metavar="PACKAGE|INPUT")
    return p


#: What else decides what the Python the native launcher starts imports:
#: recorded with the command line (see ``_invocation``).  (SUPERMIN_PYTHON,
#: the user's choice of that Python, is not: it is theirs to keep in step.)
_LAUNCH_ENVIRONMENT = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE")


def _invocation(argv: List[str]) -> "Optional[tuple]":
    """This command line, for the stamp's quick record (the native
    launcher answers the same one with nothing to do by itself)."""
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    return (argv, cwd, [(name, os.environ.get(name)) for name in _LAUNCH_ENVIRONMENT])


def run(argv: List[str]) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        print(f"supermin {__version__}")
        return 0
    if args.list_drivers:
        for name, detected in list_drivers(args.root):
            print(f"{name}\t{'detected' if detected else 'not-detected'}")
        return 0
    if args.dtb is not None:
        raise _Fail(_DTB_REMOVED)
    if args.names:
        raise _Fail(_SUPERMIN_4)
    if args.run is not None:
        return _run_command(args)
    if args.mode is None:
        raise _Fail("you must use --prepare or --build to select the mode")
    if args.share is not None:
        raise _Fail("--share goes with --run")
    size = None if args.size is None else parse_size(args.size)
    modules = _modules(args.modules)
    if args.mode == "prepare" and args.format is not None:
        raise _Fail("cannot use --prepare and --format options together")
    if args.mode == "build" and args.format is None:
        raise _Fail("when using --build, you must specify an output --format")
    fmt = None if args.format is None else _format_name(args.format)
    if not args.output:
        raise _Fail("output directory (-o option) must be supplied")
    output = args.output.rstrip("/") or "/"
    common = dict(root=args.root, lock=args.lock, verbose=args.verbose, progress=True if args.progress else None,
                  packager=args.packager)

    if args.mode == "prepare":
        if not args.args:
            raise _Fail("prepare: no input packages specified")
        prepare(
            args.args,
            output,
            use_installed=args.use_installed,
            ignore_missing=args.ignore_missing,
            packager_config=args.packager_config,
            always_download=args.always_download,
            **common,
        )
    else:
        if not args.args:
            raise _Fail("build: no input supermin appliance specified")
        inputs = [os.path.abspath(a) for a in args.args]
        assert fmt is not None  # --build requires -f, checked above
        sbom_format = _sbom.format_for(args.sbom, args.sbom_format) if args.sbom else None
        result = build(
            inputs,
            output,
            format=fmt,
            include_packagelist=args.include_packagelist,
            ignore_missing=args.ignore_missing,
            if_newer=args.if_newer,
            size=size,
            copy_kernel=args.copy_kernel,
            host_cpu=args.host_cpu,
            modules=modules,
            uuid_seed=args.uuid_seed,
            compression=args.compression,
            kernel_package=args.kernel_package,
            packager_config=args.packager_config,
            _invocation=_invocation(argv),
            **common,
        )
        if result.skipped:
            print("supermin: if-newer: output does not need rebuilding", file=sys.stderr)
        if args.sbom:
            # Up to date: the packages its stamp records.
            described = BuildResult.from_output(output, root=args.root) if result.skipped else result
            described.write_sbom(args.sbom, format=sbom_format)
    return 0


def _format_name(name: str) -> str:
    """The format ``-f NAME`` names (an alias gives its format)."""
    if name not in _FORMAT_NAMES:
        raise _Fail(f"unknown --format option ({name[:64]}): use {', '.join(FORMATS)}")
    return _FORMAT_NAMES[name]


def _modules(text: Optional[str]) -> "str | List[str] | None":
    """``--modules``: ``all``, ``none``, or ``boot[,NAME...]`` (the names)."""
    if text is None or text in ("all", "none"):
        return text
    names = [m for m in text.split(",") if m]
    if not names or names[0] != "boot":
        raise _Fail(f"--modules: expected 'all', 'none' or 'boot[,NAME...]', not '{text}'")
    return names[1:]


def _run_command(args: argparse.Namespace) -> int:
    """``--run COMMAND PACKAGE...``: the command's output on stdout, its
    exit status as ours."""
    from ._run import run as run_in_vm

    if not args.args:
        raise _Fail("run: no packages or supermin appliances specified")
    # What --run does not take: refused, not silently ignored.
    given = [flag for flag, value in (
        ("--root", args.root != "/"), ("--packager", args.packager), ("--size", args.size), ("--lock", args.lock),
        ("--if-newer", args.if_newer), ("--use-installed", args.use_installed), ("--uuid-seed", args.uuid_seed),
        ("--compression", args.compression), ("--copy-kernel", args.copy_kernel), ("--host-cpu", args.host_cpu),
        ("--include-packagelist", args.include_packagelist), ("--packager-config", args.packager_config),
        ("--always-download", args.always_download), ("--ignore-missing", args.ignore_missing),
        ("--kernel-package", args.kernel_package),
    ) if value]
    if given:
        raise _Fail(f"--run does not take {', '.join(given)} (it builds into its own cache)")
    fmt = "initramfs" if args.format is None else _format_name(args.format)
    modules = _modules(args.modules)
    # Appliance directories (`sd`, `./sd`) by path; anything else is a name.
    items = [os.path.abspath(a) if os.sep in a or os.path.isdir(a) else a for a in args.args]
    share = None
    if args.share is not None:
        directory, colon, guest = args.share.partition(":")
        share = (directory, guest) if colon else directory
    result = run_in_vm(items, args.run, format=fmt, modules=modules, verbose=args.verbose, outputs=args.output,
                       share=share)
    sys.stdout.write(result.stdout if result.stdout.endswith("\n") or not result.stdout else result.stdout + "\n")
    sys.stdout.flush()
    return result.returncode


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; errors print ``supermin: MESSAGE`` and return 1.
    Ctrl-C (SIGINT) and SIGTERM stop a build within a second, keep the
    previous output and return 130 and 143, as a shell reports a process
    killed by those signals."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # Messages exactly as upstream prints them: `supermin: TEXT` and
    # `supermin: warning: TEXT` on stderr (not Python warnings or logging).
    _set_messages(None)
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except (_Fail, SuperminError) as e:
        print(f"supermin: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("supermin: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except _Terminated:
        print("supermin: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
        _set_messages(_route_message)


if __name__ == "__main__":
    sys.exit(main())
