"""supermin: build minimal Linux appliances from the host's packages.

The heavy lifting (package databases, dependency resolution, the
appliance's tree, the format writers) is the Rust extension
:mod:`supermin._supermin`; :func:`prepare` and :func:`build` are the two
convenience entry points.  This namespace holds the API and nothing else.

>>> import supermin
>>> b = supermin.Backend.detect()
>>> [p.name for p in b.resolve(["bash"])][:3]            # doctest: +SKIP
>>> supermin.build(["bash", "coreutils"], "appliance")   # doctest: +SKIP
>>> supermin.run(["bash", "coreutils"], "uname -r").stdout  # doctest: +SKIP
"""

from ._api import FORMATS, BuildResult, SuperminWarning, build, list_drivers, parse_size, prepare
from ._boot import BootError
from ._data import ApplianceDiff, Closure, File
from ._progress import NotebookProgress, ProgressCallback, TerminalProgress
from ._run import RunResult, run
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
    __version__,
)

__all__ = [
    "Appliance",
    "ApplianceDiff",
    "ApplianceError",
    "Backend",
    "BackendError",
    "BootError",
    "BuildResult",
    "Closure",
    "FORMATS",
    "File",
    "KernelError",
    "NotebookProgress",
    "OutputError",
    "Package",
    "PackageNotFoundError",
    "ProgressCallback",
    "RunResult",
    "SuperminError",
    "SuperminWarning",
    "TerminalProgress",
    "UsageError",
    "__version__",
    "build",
    "list_drivers",
    "parse_size",
    "prepare",
    "run",
]

# Every public class says it lives here (tracebacks, pickle, reprs).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("supermin."):
        try:
            _obj.__module__ = "supermin"
        except TypeError:  # the extension's classes already say so
            pass
del _name, _obj
