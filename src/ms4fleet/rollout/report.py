"""The rollout report: per host before/after release, step timings, verification and causes; the waves;
the fleet's serving capacity over time; the outcome and exit code. Written as JSON and as one HTML page.

+ ``RolloutReport.to_dict()`` / ``write(directory)`` -> ``rollout.json`` and ``rollout.html``.
+ ``capacity(runs)``: ``[(t, replicas in service)]``, a step at every host transition.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ms4fleet.rollout.gates import exit_code
from ms4fleet.rollout.hoststate import IN_SERVICE, HostRun, Phase
from ms4fleet.rollout.waves import RolloutPlan

JSON_NAME = "rollout.json"
HTML_NAME = "rollout.html"


def capacity(runs: Sequence[HostRun], end: float | None = None) -> list[tuple[float, int]]:
    """Replicas in service after each transition of any host (one point per distinct time)."""
    times = sorted({t for run in runs for _, t in run.history} | ({end} if end is not None else set()))
    points: list[tuple[float, int]] = []
    for t in times:
        serving = 0
        for run in runs:
            phase = Phase.PENDING
            for step, at in run.history:
                if at <= t:
                    phase = step
            serving += run.replicas if phase in IN_SERVICE else 0
        if not points or points[-1][1] != serving or t == times[-1]:
            points.append((t, serving))
    return points


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
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, directory: Path) -> tuple[Path, Path]:
        from ms4fleet.rollout.html import render_html

        directory.mkdir(parents=True, exist_ok=True)
        json_path, html_path = directory / JSON_NAME, directory / HTML_NAME
        json_path.write_text(self.to_json(), encoding="utf-8")
        html_path.write_text(render_html(self.to_dict()), encoding="utf-8")
        return json_path, html_path
