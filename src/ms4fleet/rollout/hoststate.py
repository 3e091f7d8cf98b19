"""The per-host state machine of a rollout, with the time of every step.

    pending -> prestaged -> drained -> stopped -> started -> verified -> rejoined
                  any step from drained on -> rolling-back -> rolled-back (old release serving again)
    any step -> failed (cannot go on, host left as the report says) | unreachable (lost the connection)
    pending -> unchanged (already at the release: not touched)
    pending -> applied (a live change: applied in service, no replica restarted, never drained)

``HostRun.advance`` refuses any other move, so a driver bug cannot report a host as rejoined that was
never verified. A host is in the load balancer (serving) in pending, prestaged, rejoined, rolled-back and
unchanged; the capacity chart counts its replicas then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    PENDING = "pending"
    PRESTAGED = "prestaged"
    DRAINED = "drained"
    STOPPED = "stopped"
    STARTED = "started"
    VERIFIED = "verified"
    REJOINED = "rejoined"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    UNCHANGED = "unchanged"
    APPLIED = "applied"


_SWITCHING = {Phase.DRAINED, Phase.STOPPED, Phase.STARTED, Phase.VERIFIED}
_ALWAYS = {Phase.FAILED, Phase.UNREACHABLE}
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.PRESTAGED, Phase.UNCHANGED, Phase.APPLIED, *_ALWAYS}),
    Phase.PRESTAGED: frozenset({Phase.DRAINED, *_ALWAYS}),
    Phase.DRAINED: frozenset({Phase.STOPPED, Phase.ROLLING_BACK, *_ALWAYS}),
    Phase.STOPPED: frozenset({Phase.STARTED, Phase.ROLLING_BACK, *_ALWAYS}),
    Phase.STARTED: frozenset({Phase.VERIFIED, Phase.ROLLING_BACK, *_ALWAYS}),
    Phase.VERIFIED: frozenset({Phase.REJOINED, Phase.ROLLING_BACK, *_ALWAYS}),
    Phase.ROLLING_BACK: frozenset({Phase.ROLLED_BACK, *_ALWAYS}),
    Phase.REJOINED: frozenset(),
    Phase.ROLLED_BACK: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.UNREACHABLE: frozenset(),
    Phase.UNCHANGED: frozenset(),
    Phase.APPLIED: frozenset(),
}
TERMINAL = frozenset(phase for phase, nexts in TRANSITIONS.items() if not nexts)
IN_SERVICE = frozenset(
    {Phase.PENDING, Phase.PRESTAGED, Phase.REJOINED, Phase.ROLLED_BACK, Phase.UNCHANGED, Phase.APPLIED}
)


# After its batch, a host in one of these goes back into the load balancer: verified at the new release, or
# rolled back (rolling-back once its previous release passed its checks again, before the driver says so).
REJOINING = frozenset({Phase.VERIFIED, Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.REJOINED})


class InvalidTransition(RuntimeError):
    """A driver tried a move the state machine does not allow."""


@dataclass
class HostRun:
    """One host's rollout: phases with times (seconds since the rollout started), releases, verification."""

    name: str
    replicas: int
    before: str | None = None
    target: str | None = None
    history: list[tuple[Phase, float]] = field(default_factory=lambda: [(Phase.PENDING, 0.0)])
    detail: str = ""
    verification: list[dict[str, Any]] = field(default_factory=list)
    causes: list[dict[str, Any]] = field(default_factory=list)
    # Seconds each replica took from `systemctl start` to ready, measured on the host.
    start_to_ready_s: float | None = None
    # The core's classification of this host's change (ms4fleet.rollout.changes): kind and why.
    change: str = ""
    change_reasons: list[str] = field(default_factory=list)

    @property
    def phase(self) -> Phase:
        return self.history[-1][0]

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL

    @property
    def serving(self) -> bool:
        return self.phase in IN_SERVICE

    @property
    def after(self) -> str | None:
        """The release the host serves at the end (None when unknown: failed or unreachable mid-switch)."""
        if self.phase in {Phase.REJOINED, Phase.APPLIED}:
            return self.target
        if self.phase in {Phase.ROLLED_BACK, Phase.UNCHANGED, Phase.PENDING, Phase.PRESTAGED}:
            return self.before
        return None

    def advance(self, phase: Phase, at: float, detail: str = "") -> None:
        if phase not in TRANSITIONS[self.phase]:
            raise InvalidTransition(f"{self.name}: {self.phase} -> {phase} is not a rollout step")
        self.history.append((phase, at))
        if detail:
            self.detail = detail

    def time_of(self, phase: Phase) -> float | None:
        return next((t for p, t in self.history if p is phase), None)

    @property
    def gap_s(self) -> float | None:
        """Seconds the host was out of the load balancer (drained until back in)."""
        out = self.time_of(Phase.DRAINED)
        back = self.time_of(Phase.REJOINED) or self.time_of(Phase.ROLLED_BACK)
        return None if out is None or back is None else back - out

    @property
    def not_serving_s(self) -> float | None:
        """Seconds from stopping the old replicas to the new ones verified and back in the load balancer."""
        stopped = self.time_of(Phase.STOPPED)
        back = self.time_of(Phase.REJOINED) or self.time_of(Phase.ROLLED_BACK)
        return None if stopped is None or back is None else back - stopped

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostRun:
        """A host's run read back from ``to_dict()`` (a written report); derived fields are recomputed."""
        return cls(
            name=data["host"],
            replicas=int(data["replicas"]),
            before=data.get("before"),
            target=data.get("target"),
            history=[(Phase(step["phase"]), float(step["t"])) for step in data["history"]],
            detail=data.get("detail", ""),
            verification=list(data.get("verification", [])),
            causes=list(data.get("causes", [])),
            start_to_ready_s=data.get("start_to_ready_s"),
            change=data.get("change", ""),
            change_reasons=list(data.get("change_reasons", [])),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.name,
            "replicas": self.replicas,
            "phase": str(self.phase),
            "before": self.before,
            "target": self.target,
            "after": self.after,
            "detail": self.detail,
            "history": [{"phase": str(p), "t": round(t, 3)} for p, t in self.history],
            "gap_s": None if self.gap_s is None else round(self.gap_s, 3),
            "not_serving_s": None if self.not_serving_s is None else round(self.not_serving_s, 3),
            "start_to_ready_s": None if self.start_to_ready_s is None else round(self.start_to_ready_s, 3),
            "change": self.change,
            "change_reasons": self.change_reasons,
            "verification": self.verification,
            "causes": self.causes,
        }
