"""A small terminal progress bar for long builds (stderr, TTY only)."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

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


def resolve_progress(progress: "bool | ProgressCallback | None") -> Optional[ProgressCallback]:
    """``True`` means a bar on a terminal (nothing when stderr is not one);
    a callable is used as it is."""
    if progress is True:
        return TerminalProgress() if sys.stderr.isatty() else None
    if callable(progress):
        return progress
    return None
