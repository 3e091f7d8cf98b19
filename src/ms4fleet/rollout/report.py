"""The rollout report: per host before/after release, step timings, verification and causes; the waves;
the fleet's serving capacity over time; the outcome and exit code. Written as JSON and as one HTML page.

+ ``RolloutReport.to_dict()`` / ``from_dict(data)`` / ``write(directory)`` -> ``rollout.json`` and
  ``rollout.html``, each replaced atomically (written beside, then renamed): a reader never sees half a report.
+ ``ReportWriter(directory, build)``: a rollout listener that rewrites both after every host's phase change
  (paced on a large fleet), so the report follows the rollout while it runs (a failed write is kept for the
  end, never stops it).
+ ``capacity(runs)``: ``[(t, replicas in service)]``, a step at every host transition.
+ ``wave_spans(plan, runs, end)``: when each wave ran (its first host leaving ``pending`` to its last done).
+ ``floor_replicas(runs, policy)``: the replicas the policy keeps serving at every moment.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ms4fleet.rollout.gates import exit_code
from ms4fleet.rollout.hoststate import IN_SERVICE, HostRun, Phase
from ms4fleet.rollout.waves import Policy, RolloutPlan, serving_floor

JSON_NAME = "rollout.json"
HTML_NAME = "rollout.html"


def capacity(runs: Sequence[HostRun], end: float | None = None) -> list[tuple[float, int]]:
    """Replicas in service after each transition of any host (one point per distinct time).

    One sweep over every host's steps in time order (the report is rebuilt after each step of a rollout of
    possibly thousands of hosts), each host's steps kept in their own order at equal times."""
    events = sorted(
        ((at, i, k, step) for i, run in enumerate(runs) for k, (step, at) in enumerate(run.history)),
        key=lambda e: (e[0], e[1], e[2]),
    )
    times = sorted({e[0] for e in events} | ({end} if end is not None else set()))
    serving_now = [False] * len(runs)
    serving = 0
    points: list[tuple[float, int]] = []
    cursor = 0
    for t in times:
        while cursor < len(events) and events[cursor][0] <= t:
            _, i, _, step = events[cursor]
            now = step in IN_SERVICE
            serving += runs[i].replicas * (int(now) - int(serving_now[i]))
            serving_now[i] = now
            cursor += 1
        if not points or points[-1][1] != serving or t == times[-1]:
            points.append((t, serving))
    return points


def wave_spans(plan: RolloutPlan, runs: Sequence[HostRun], end: float) -> list[dict[str, Any]]:
    """Each wave that started: from its first host leaving ``pending`` to its last host done (``end`` while
    one is not, or when the rollout stopped inside it). Waves never reached have no span."""
    by_name = {run.name: run for run in runs}
    spans = []
    for wave in plan.waves:
        hosts = [by_name[name] for name in wave.hosts if name in by_name]
        began = [run.history[1][1] for run in hosts if len(run.history) > 1]
        if not began:
            continue
        finished = all(run.done for run in hosts)
        last = max((run.history[-1][1] for run in hosts if run.done), default=end)
        spans.append(
            {
                "index": wave.index,
                "kind": wave.kind,
                "hosts": list(wave.hosts),
                "start": round(min(began), 3),
                "end": round(last if finished else end, 3),
            }
        )
    return spans


def floor_replicas(runs: Sequence[HostRun], policy: Policy) -> tuple[int, int]:
    """``(hosts, replicas)`` the policy keeps serving: ``waves.serving_floor`` hosts, counted as the replicas
    of the smallest hosts (the worst case: the largest are the ones out)."""
    hosts = serving_floor(len(runs), policy)
    return hosts, sum(sorted(run.replicas for run in runs)[:hosts])


def _replace(path: Path, text: str) -> None:
    """Write ``text`` beside ``path``, then rename it over: the old file stays whole until the new one is."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # The mode the old write_text gave (0666 less the umask): the report is meant to be shared.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        # An interrupt (the rollout's SIGINT) or a full disk leaves no stray file behind.
        temp.unlink(missing_ok=True)
        raise


@dataclass
class RolloutReport:
    inventory: str
    engine: str
    started_at: str
    plan: RolloutPlan
    runs: list[HostRun]
    duration_s: float = 0.0
    stopped: str = ""
    notes: list[str] = field(default_factory=list)
    # Earlier runs of the same rollout (killed or interrupted, then resumed), from the controller's journal.
    earlier: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutReport:
        """The report read back from ``rollout.json``: rendering it again gives today's page."""
        return cls(
            inventory=data["inventory"],
            engine=data["engine"],
            started_at=data["started_at"],
            plan=RolloutPlan.from_dict(data["plan"]),
            runs=[HostRun.from_dict(host) for host in data["hosts"]],
            duration_s=float(data["duration_s"]),
            stopped=data.get("stopped", ""),
            notes=list(data.get("notes", [])),
            earlier=list(data.get("earlier_runs", [])),
        )

    @property
    def exit_code(self) -> int:
        return exit_code(self.runs)

    @property
    def outcome(self) -> str:
        if all(run.phase is Phase.UNCHANGED for run in self.runs):
            # A resumed rollout whose hosts were all switched before the controller died did complete.
            return "complete" if self.earlier else "no-op"
        return "complete" if self.exit_code == 0 else "stopped"

    @property
    def total_replicas(self) -> int:
        return sum(run.replicas for run in self.runs)

    def run(self, host: str) -> HostRun:
        return next(run for run in self.runs if run.name == host)

    def causes(self) -> list[dict[str, Any]]:
        return [{"host": run.name, **cause} for run in self.runs for cause in run.causes]

    def to_dict(self) -> dict[str, Any]:
        floor = floor_replicas(self.runs, self.plan.policy)
        return {
            "inventory": self.inventory,
            "engine": self.engine,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "stopped": self.stopped,
            "causes": self.causes(),
            "notes": self.notes,
            "earlier_runs": self.earlier,
            "plan": self.plan.to_dict(),
            "hosts": [run.to_dict() for run in self.runs],
            "capacity": {
                "total_replicas": self.total_replicas,
                "points": [[round(t, 3), n] for t, n in capacity(self.runs, self.duration_s)],
                "floor_hosts": floor[0],
                "floor_replicas": floor[1],
                "waves": wave_spans(self.plan, self.runs, self.duration_s),
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, directory: Path) -> tuple[Path, Path]:
        from ms4fleet.rollout.html import render_html

        directory.mkdir(parents=True, exist_ok=True)
        json_path, html_path = directory / JSON_NAME, directory / HTML_NAME
        data = self.to_dict()
        _replace(json_path, json.dumps(data, indent=2) + "\n")
        _replace(html_path, render_html(data))
        return json_path, html_path


class ReportWriter:
    """A rollout listener: after every host's phase change, ``build()`` the report as it stands and write it.
    ``build`` returns None while there is nothing to report yet (the fleet is still being read: a rollout
    refused then leaves no report, as before).

    The driver waits while the report is written, so writes keep to at most ``1 / (PACE + 1)`` of its time:
    a step coming sooner than ``PACE`` x the last write's duration after it is written by a timer once that
    time is up (small fleets render in milliseconds; 1,000 hosts take about half a second), so no step stays
    unwritten through a long model load. ``close()`` before the final write: no timer writes after it. A
    write that fails (disk full, directory gone) does not stop the rollout: the error is kept in ``error`` and
    the final write, which reports its own failure, tries again."""

    PACE = 4.0

    def __init__(
        self,
        directory: Path,
        build: Callable[[], RolloutReport | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self._build = build
        self._clock = clock
        self._lock = threading.Lock()
        self._next_at = float("-inf")
        self._timer: threading.Timer | None = None
        self._closed = False
        self.writes = 0
        self.error: OSError | None = None

    def __call__(self, run: HostRun, phase: Phase) -> None:
        with self._lock:
            wait = self._next_at - self._clock()
            if wait <= 0:
                self._write()
            elif self._timer is None and not self._closed:
                self._timer = threading.Timer(wait, self._due)
                self._timer.daemon = True
                self._timer.start()

    def _due(self) -> None:
        with self._lock:
            self._timer = None
            if not self._closed:
                self._write()

    def _write(self) -> None:
        started = self._clock()
        report = self._build()
        if report is None:
            return
        try:
            report.write(self.directory)
            self.writes += 1
        except OSError as err:
            self.error = err
        finished = self._clock()
        self._next_at = finished + self.PACE * (finished - started)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
