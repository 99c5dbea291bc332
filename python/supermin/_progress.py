"""Progress for long builds: a bar on a terminal, a bar in a Jupyter
notebook (``tqdm.auto`` when it is installed, else an HTML line updated in
place), nothing elsewhere.  Every stage is reported with its name and
counts: ``resolving dependencies``, ``reading file lists``, ``config
files``, ``listing files``, ``writing files``, ``writing the image``,
``finding the kernel``, ``writing the initrd``.  Callbacks run on the calling thread, one at a
time; one that raises cancels the build (the previous output is kept) and
its exception is raised by the build."""

from __future__ import annotations

import html
import sys
import time
from typing import Any, Callable, Dict, List, Optional, TextIO

ProgressCallback = Callable[[str, int, int], None]


class TerminalProgress:
    """Draws ``stage [#####     ]  50% 123/246`` on one line, redrawn at most
    ten times a second and finished with a newline when a stage completes."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        finished = total > 0 and done >= total
        if not finished and now - self._last < 0.1:
            return
        self._last = now
        fraction = done / total if total else 1.0
        filled = int(self.width * fraction)
        bar = "#" * filled + " " * (self.width - filled)
        self.stream.write(f"\r{stage} [{bar}] {fraction:4.0%} {done}/{total}")
        if finished:
            self.stream.write("\n")
        self.stream.flush()


class NotebookProgress:
    """One bar per stage in a Jupyter notebook's output: ``tqdm.auto``'s
    widgets when tqdm is installed, else an HTML table that one display
    updates in place (at most ten times a second, and at each stage's end)."""

    def __init__(self) -> None:
        self._stages: Dict[str, List[int]] = {}
        self._bars: Dict[str, Any] = {}
        self._last = 0.0
        self._handle: Any = None
        try:
            from tqdm.auto import tqdm

            self._tqdm: Any = tqdm
        except ImportError:
            self._tqdm = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._tqdm is not None:
            bar = self._bars.get(stage)
            if bar is None:
                bar = self._bars[stage] = self._tqdm(total=total, desc=stage, unit="")
            if bar.total != total:
                bar.total = total
            bar.n = done
            bar.refresh()
            if total and done >= total:
                bar.close()
            return
        self._stages[stage] = [done, total]
        now = time.monotonic()
        if not (total and done >= total) and now - self._last < 0.1:
            return
        self._last = now
        from IPython.display import HTML, display

        page = HTML(self.html())
        if self._handle is None:
            self._handle = display(page, display_id=True)
        else:
            self._handle.update(page)

    def html(self) -> str:
        """The stages so far as an HTML table of bars."""
        rows = []
        for stage, (done, total) in self._stages.items():
            fraction = done / total if total else 1.0
            rows.append(
                f'<tr><td style="text-align:left">{html.escape(stage)}</td>'
                f'<td style="text-align:left"><progress value="{done}" max="{max(total, 1)}"></progress></td>'
                f'<td style="text-align:left">{fraction:.0%} {done}/{total}</td></tr>'
            )
        return f"<table>{''.join(rows)}</table>"


def in_notebook() -> bool:
    """Is this a Jupyter kernel (IPython's kernel app, not a terminal)?"""
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def resolve_progress(progress: "bool | ProgressCallback | None") -> Optional[ProgressCallback]:
    """``True`` means a bar where one can be drawn: in a notebook, on a
    terminal; nothing (and no error) elsewhere.  A callable is used as it is."""
    if progress is True:
        if in_notebook():
            return NotebookProgress()
        return TerminalProgress() if sys.stderr.isatty() else None
    if callable(progress):
        return progress
    return None
