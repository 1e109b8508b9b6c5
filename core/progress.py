"""A one-line progress display on stderr, shown only on a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    """``done/total`` (or a count), items per second and time left, redrawn at most 10 times a second."""

    def __init__(self, enabled: bool, total: int | None = None, label: str = "", stream=None):
        self.enabled = enabled
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.last = 0.0
        self.shown = False
        if enabled:
            _ACTIVE.append(self)

    def update(self, done: int, read: int | None = None) -> None:
        """Show ``done`` items finished (and ``read``, while reading is ahead of them)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.1:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        if self.total:
            width = 30
            filled = int(width * min(done, self.total) / self.total)
            left = (self.total - done) / rate if rate > 0 else 0
            text = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {rate:,.0f}/s {left:,.0f} s left"
        else:
            text = f"{done} done, {rate:,.0f}/s"
        if read is not None and read > done:
            text += f" (read {read})"
        self.stream.write(f"\r{self.label}{text}\x1b[K")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def close(self) -> None:
        self.clear()
        if self in _ACTIVE:
            _ACTIVE.remove(self)


_ACTIVE: list[Progress] = []


def clear_all() -> None:
    """Clear any progress line before a log message is printed."""
    for bar in _ACTIVE:
        bar.clear()
