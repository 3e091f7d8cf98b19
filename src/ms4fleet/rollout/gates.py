"""Gate decisions: what the outcome of one host's step means for that host and for the rollout.

+ ``after_prestage(ok, reachable)``: go on, or stop before anything is stopped anywhere in the wave.
+ ``after_switch(verified, reachable)``: rejoin, roll this host back (and stop), or stop (unreachable).
+ ``wave_gate(runs)``: the next wave starts only when every host of this one is rejoined.
+ ``exit_code(runs)``: 0 when every host ends at the release or unchanged, 1 otherwise.

There is no tolerated failure: one failed host stops the rollout (Ansible's max_fail_percentage 0), since a
release that fails one host's verification is not a release to give the next wave.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ms4fleet.rollout.hoststate import HostRun, Phase

EXIT_OK, EXIT_FAILED = 0, 1


class Action(StrEnum):
    CONTINUE = "continue"
    REJOIN = "rejoin"
    ROLLBACK = "rollback"
    STOP = "stop"


def after_prestage(ok: bool, reachable: bool) -> Action:
    """Pre-staging interrupts nothing, so a failure there stops the rollout with nothing to undo."""
    return Action.CONTINUE if ok and reachable else Action.STOP


def after_switch(verified: bool, reachable: bool) -> Action:
    """A host that cannot be reached cannot be rolled back from here: stop and report it."""
    if not reachable:
        return Action.STOP
    return Action.REJOIN if verified else Action.ROLLBACK


@dataclass(frozen=True)
class GateDecision:
    proceed: bool
    reason: str


def wave_gate(runs: Iterable[HostRun]) -> GateDecision:
    """Proceed only when every host of the wave is back in service at the new release."""
    blocking = [run for run in runs if run.phase is not Phase.REJOINED]
    if not blocking:
        return GateDecision(True, "every host of the wave verified and rejoined")
    first = blocking[0]
    why = f": {first.detail}" if first.detail else ""
    return GateDecision(False, f"{first.name} ended {first.phase}{why}")


def exit_code(runs: Iterable[HostRun]) -> int:
    ok = all(run.phase in {Phase.REJOINED, Phase.UNCHANGED, Phase.APPLIED} for run in runs)
    return EXIT_OK if ok else EXIT_FAILED
