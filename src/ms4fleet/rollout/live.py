"""The rollout as it runs, for people: on a terminal a live table (host, phase, time in it, wave k/n, replicas
in service) redrawn while a host sits in one step (a model load takes minutes); without one, a plain line
every ``LINE_EVERY_S`` seconds while any host is mid-switch (the per-step lines are the engine's).

+ ``RolloutBoard(runs, plan, clock)``: what both draw, from the driver's live ``HostRun``s: ``view()``
  (a headline and a rich table) and ``line()``.
+ ``board_view(console, board)``: a context manager: rich ``Live`` on a terminal, else a thread that prints
  ``line()`` periodically; both stop when it exits.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ms4fleet.progress import LINE_EVERY_S
from ms4fleet.rollout.hoststate import HostRun, Phase
from ms4fleet.rollout.waves import RolloutPlan

# Past this many hosts the table keeps the ones mid-switch and the latest done, and counts the rest.
MAX_ROWS = 24
_STYLE = {
    Phase.REJOINED: "green",
    Phase.UNCHANGED: "green",
    Phase.APPLIED: "green",
    Phase.VERIFIED: "green",
    Phase.PENDING: "dim",
    Phase.ROLLING_BACK: "yellow",
    Phase.ROLLED_BACK: "red",
    Phase.FAILED: "red",
    Phase.UNREACHABLE: "red",
}


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class RolloutBoard:
    """The rollout's state for a person: ``runs`` are the driver's (updated in place), ``plan()`` the waves
    once the fleet was read (None before), ``clock()`` seconds since the rollout started."""

    runs: Mapping[str, HostRun]
    plan: Callable[[], RolloutPlan | None]
    clock: Callable[[], float]
    max_rows: int = MAX_ROWS

    def _waves(self) -> dict[str, int]:
        plan = self.plan()
        return {} if plan is None else {host: wave.index for wave in plan.waves for host in wave.hosts}

    def wave_now(self) -> tuple[int, int]:
        """``(k, n)``: the latest wave one of whose hosts has left ``pending`` (1-based; 0 before any)."""
        plan = self.plan()
        if plan is None:
            return 0, 0
        started = [
            wave.index
            for wave in plan.waves
            if any(self.runs[h].phase is not Phase.PENDING for h in wave.hosts if h in self.runs)
        ]
        return (max(started) + 1 if started else 0), len(plan.waves)

    def in_service(self) -> tuple[int, int]:
        runs = list(self.runs.values())
        return sum(r.replicas for r in runs if r.serving), sum(r.replicas for r in runs)

    def active(self) -> list[HostRun]:
        return [r for r in self.runs.values() if not r.done and r.phase is not Phase.PENDING]

    def headline(self) -> str:
        k, n = self.wave_now()
        serving, total = self.in_service()
        wave = f"wave {k}/{n}" if n else "reading the fleet"
        return f"rollout {_clock(self.clock())}: {wave}, {serving} of {total} replicas in service"

    def line(self) -> str:
        """``rollout 1m20s: wave 2/3, 6 of 8 replicas in service; gpu-3 stopped for 12s``."""
        active = self.active()
        now = self.clock()
        busy = ", ".join(f"{r.name} {r.phase} for {_clock(now - r.history[-1][1])}" for r in active[:8])
        more = f" and {len(active) - 8} more" if len(active) > 8 else ""
        return self.headline() + (f"; {busy}{more}" if busy else "")

    def _rows(self) -> tuple[list[HostRun], Counter[str]]:
        runs = list(self.runs.values())
        if len(runs) <= self.max_rows:
            return runs, Counter()
        active = self.active()
        done = sorted((r for r in runs if r.done and len(r.history) > 1), key=lambda r: r.history[-1][1])
        shown = active[: self.max_rows]
        shown += done[-(self.max_rows - len(shown)) :] if len(shown) < self.max_rows else []
        names = {r.name for r in shown}
        rest = Counter(str(r.phase) for r in runs if r.name not in names)
        order = {name: i for i, name in enumerate(self.runs)}
        return sorted(shown, key=lambda r: order[r.name]), rest

    def table(self) -> Table:
        waves = self._waves()
        _, n = self.wave_now()
        now = self.clock()
        table = Table()
        table.add_column("host", no_wrap=True)
        table.add_column("phase", no_wrap=True)
        table.add_column("for", justify="right", no_wrap=True)
        table.add_column("wave", justify="right", no_wrap=True)
        table.add_column("in service", justify="right", no_wrap=True)
        rows, rest = self._rows()
        for run in rows:
            style = _STYLE.get(run.phase, "cyan")
            since = run.history[-1][1]
            # A finished host shows when it finished; one mid-step how long it has been in that step.
            elapsed = f"at {_clock(since)}" if run.done else _clock(now - since)
            wave = f"{waves[run.name] + 1}/{n}" if run.name in waves else "-"
            serving = run.replicas if run.serving else 0
            table.add_row(run.name, f"[{style}]{run.phase}[/{style}]", elapsed, wave, f"{serving}/{run.replicas}")
        if rest:
            counts = ", ".join(f"{count} {phase}" for phase, count in sorted(rest.items()))
            table.add_row(f"{sum(rest.values())} more", counts, "", "", "")
        return table

    def view(self) -> Group:
        """The headline (never wrapped to the table's width) above the table."""
        return Group(Text(self.headline(), no_wrap=True, overflow="ellipsis"), self.table())


@contextmanager
def board_view(console: Console, board: RolloutBoard, every_s: float = LINE_EVERY_S) -> Iterator[None]:
    """The board drawn live on a terminal (redrawn twice a second: the "for" column moves during a model
    load), else ``board.line()`` every ``every_s`` seconds while a host is mid-switch."""
    if console.is_terminal:
        # get_renderable: every refresh reads the runs as they are now.
        with Live(console=console, get_renderable=board.view, refresh_per_second=2, transient=False):
            yield
        return
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every_s):
            if board.active():
                console.print(board.line(), markup=False, highlight=False, soft_wrap=True)

    ticker = threading.Thread(target=tick, name="rollout-lines", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
