"""Transfer progress people read at a glance: one overall row with its ETA above a row per file or host, drawn
live on a terminal; without one, a plain line every N seconds or every N GiB (logs, CI, an engine's output).

+ ``Tracker(view)``: thread-safe byte counts. It is the weights fetchers' ``Progress`` (``start`` / ``advance``
  / ``finish`` per file) and staging's per-host reporter (``row`` / ``moved`` / ``done``); ``expect(total)``
  sets the overall total when it is known before the first byte moves.
+ ``LiveView(console, label)``: rich bars (overall first); ``LineView(write, label)``: periodic lines.
+ ``tracker_for(console, label)``: the one a console calls for (a context manager that draws, then stops).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, TaskID, TextColumn
from rich.progress import Progress as RichProgress

GIB = 1024**3
# Without a terminal: a line at least this often while bytes move, and at every GiB boundary crossed.
LINE_EVERY_S = 10.0
LINE_EVERY_BYTES = GIB


@dataclass
class Totals:
    """The overall state a view draws: bytes moved of the total, rows finished of rows, seconds since start."""

    done: int
    total: int
    finished: int
    rows: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        left = self.total - self.done
        return None if self.rate <= 0 or left < 0 else left / self.rate


class View(Protocol):
    def row(self, key: str, total: int, done: int) -> None: ...

    def update(self, key: str, total: int, done: int, totals: Totals) -> None: ...

    def finish(self, key: str, totals: Totals) -> None: ...


class Tracker:
    """Byte counts per row (a file or a host) and overall, reported to a ``View`` as they change."""

    def __init__(self, view: View, clock: Callable[[], float] = time.monotonic) -> None:
        self._view = view
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._rows: dict[str, list[int]] = {}  # key -> [total, done]
        self._finished: set[str] = set()
        self._expected: int | None = None
        self._moved = 0

    def expect(self, total: int) -> None:
        """The bytes the whole job will move (otherwise: the sum of what its rows have left)."""
        with self._lock:
            self._expected = total

    def _totals(self) -> Totals:
        left = sum(max(total - done, 0) for total, done in self._rows.values())
        total = self._expected if self._expected is not None else self._moved + left
        return Totals(
            self._moved, max(total, self._moved), len(self._finished), len(self._rows), self._clock() - self._started
        )

    # The weights fetchers' Progress protocol: one row per file.
    def start(self, path: str, total: int, done: int) -> None:
        self.row(path, total, done)

    def advance(self, path: str, nbytes: int) -> None:
        with self._lock:
            entry = self._rows[path]
            entry[1] += nbytes
            self._moved += nbytes
            self._view.update(path, entry[0], entry[1], self._totals())

    def finish(self, path: str) -> None:
        self.done(path)

    # Staging: one row per host, its byte count as the copier reports it (absolute, with its best total).
    def row(self, key: str, total: int, done: int = 0) -> None:
        with self._lock:
            self._rows[key] = [total, done]
            self._view.row(key, total, done)

    def moved(self, key: str, done: int, total: int | None = None) -> None:
        with self._lock:
            entry = self._rows[key]
            if total is not None:
                entry[0] = total
            self._moved += max(done - entry[1], 0)
            entry[1] = max(done, entry[1])
            self._view.update(key, entry[0], entry[1], self._totals())

    def done(self, key: str) -> None:
        with self._lock:
            self._finished.add(key)
            self._view.finish(key, self._totals())


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def summary(label: str, totals: Totals, unit: str) -> str:
    """``label: 1.2 GiB of 4.0 GiB (30%), 210.0 MiB/s, ETA 14s; 1 of 3 hosts done``."""
    pct = 100 * totals.done / totals.total if totals.total else 100
    return (
        f"{label}: {_size(totals.done)} of {_size(totals.total)} ({pct:.0f}%), {_size(totals.rate)}/s, "
        f"ETA {_duration(totals.eta_s)}; {totals.finished} of {totals.rows} {unit}s done"
    )


class LineView:
    """Plain lines for a log: every ``every_s`` seconds or ``every_bytes`` bytes while bytes move, a line when a
    row finishes, nothing else (no carriage returns, no escape codes)."""

    def __init__(
        self,
        write: Callable[[str], None],
        label: str,
        unit: str = "file",
        every_s: float = LINE_EVERY_S,
        every_bytes: int = LINE_EVERY_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write, self._label, self._unit = write, label, unit
        self._every_s, self._every_bytes, self._clock = every_s, every_bytes, clock
        self._last_at = clock()
        self._last_bytes = 0

    def row(self, key: str, total: int, done: int) -> None:
        return None

    def update(self, key: str, total: int, done: int, totals: Totals) -> None:
        now = self._clock()
        crossed = totals.done // self._every_bytes > self._last_bytes // self._every_bytes
        if crossed or now - self._last_at >= self._every_s:
            self._last_at, self._last_bytes = now, totals.done
            self._write(summary(self._label, totals, self._unit))

    def finish(self, key: str, totals: Totals) -> None:
        self._last_at, self._last_bytes = self._clock(), totals.done
        self._write(f"{summary(self._label, totals, self._unit)} (finished: {key})")


class LiveView:
    """rich bars: the overall row (bytes, speed and ETA over the whole run, steadier than rich's sliding window
    on bursty copies) stays on top; a row per file or host below it, hidden once finished. One display, so no
    second set of bars competes with it."""

    def __init__(self, progress: RichProgress, label: str) -> None:
        self._progress = progress
        self._overall = progress.add_task(f"[bold]{label}", total=None, pace="")
        self._tasks: dict[str, TaskID] = {}

    def row(self, key: str, total: int, done: int) -> None:
        self._tasks[key] = self._progress.add_task(f"  {key}", total=total or None, completed=done, pace="")

    def _overall_row(self, totals: Totals) -> None:
        pace = f"{_size(totals.rate)}/s, ETA {_duration(totals.eta_s)}"
        self._progress.update(self._overall, total=totals.total or None, completed=totals.done, pace=pace)

    def update(self, key: str, total: int, done: int, totals: Totals) -> None:
        self._progress.update(self._tasks[key], total=total or None, completed=done)
        self._overall_row(totals)

    def finish(self, key: str, totals: Totals) -> None:
        self._progress.update(self._tasks[key], visible=False)
        self._overall_row(totals)


@contextmanager
def tracker_for(console: Console, label: str, unit: str = "file") -> Iterator[Tracker]:
    """A tracker drawn live when ``console`` is a terminal, else as periodic lines on it."""
    if not console.is_terminal:
        # soft_wrap: a log line stays one line whatever width rich guesses for a pipe.
        yield Tracker(
            LineView(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True), label, unit)
        )
        return
    bars = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TextColumn("{task.fields[pace]}"),
        console=console,
        transient=True,
    )
    with bars:
        yield Tracker(LiveView(bars, label))
