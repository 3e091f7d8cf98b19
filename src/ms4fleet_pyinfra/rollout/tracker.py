"""What the rollout knows about each host while operations run: its ``HostRun`` (phases with times), why a
step failed, and what the host reported. Operations write here from their ``FunctionCommand``s; the driver
reads it between States. A progress callback sees every phase change (the live display, tests' hooks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ms4fleet.rollout.hoststate import HostRun, Phase
from ms4fleet.rollout.release import Release, ReleaseRecord

Listener = Callable[[HostRun, Phase], None]


@dataclass
class HostFacts:
    """Read at the start: the release record, the state of the host's vLLM units and whether every
    replica answers GET /health (None: not probed, the units are not all running)."""

    record: ReleaseRecord
    units: dict[str, str]
    healthy: bool | None = None
    # Each unit file's sha256 on the host.
    unit_sha256: dict[str, str] = field(default_factory=dict)
    # The core's converged check, where a deploy asked it (None: not asked).
    converged: bool | None = None

    @property
    def all_active(self) -> bool:
        return bool(self.units) and all(state == "active" for state in self.units.values())


@dataclass
class Tracker:
    runs: dict[str, HostRun] = field(default_factory=dict)
    facts: dict[str, HostFacts] = field(default_factory=dict)
    targets: dict[str, Release] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.started

    def advance(self, host: str, phase: Phase, detail: str = "") -> None:
        with self._lock:
            run = self.runs[host]
            run.advance(phase, self.now(), detail)
        for listener in self.listeners:
            listener(run, phase)

    def fail(self, host: str, message: str, causes: list[dict[str, Any]] | None = None) -> bool:
        """Record why ``host``'s step failed; returns False for the ``FunctionCommand`` to fail the host."""
        with self._lock:
            self.failures[host] = message
            run = self.runs[host]
            run.detail = message
            if causes:
                run.causes = causes
        return False

    def take_failure(self, host: str) -> str | None:
        with self._lock:
            return self.failures.pop(host, None)
