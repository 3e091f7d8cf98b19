"""The per-host state machine and the gate decisions taken on its outcomes."""

from __future__ import annotations

import pytest

from ms4fleet.rollout.gates import Action, after_prestage, after_switch, exit_code, wave_gate
from ms4fleet.rollout.hoststate import HostRun, InvalidTransition, Phase

HAPPY = [Phase.PRESTAGED, Phase.DRAINED, Phase.STOPPED, Phase.STARTED, Phase.VERIFIED, Phase.REJOINED]


def walk(name: str, phases: list[Phase], replicas: int = 2) -> HostRun:
    run = HostRun(name, replicas, before="old", target="new")
    for t, phase in enumerate(phases, start=1):
        run.advance(phase, float(t))
    return run


def test_happy_path_times_and_after_release() -> None:
    run = walk("gpu-1", HAPPY)
    assert run.phase is Phase.REJOINED and run.done and run.serving
    assert run.after == "new"
    assert run.gap_s == 4.0  # drained at 2, rejoined at 6
    assert run.not_serving_s == 3.0  # stopped at 3
    assert run.to_dict()["history"][0] == {"phase": "pending", "t": 0.0}


def test_rollback_path_serves_the_old_release() -> None:
    run = walk("gpu-1", [*HAPPY[:4], Phase.ROLLING_BACK, Phase.ROLLED_BACK])
    assert run.after == "old" and run.serving and run.done
    assert run.gap_s == 4.0


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], Phase.STOPPED),  # nothing is stopped before it is pre-staged and drained
        ([Phase.PRESTAGED], Phase.STARTED),
        ([Phase.PRESTAGED, Phase.DRAINED, Phase.STOPPED], Phase.REJOINED),  # never rejoin unverified
        ([Phase.PRESTAGED], Phase.ROLLING_BACK),  # nothing to roll back before the drain
        (HAPPY, Phase.DRAINED),  # terminal
        ([Phase.UNCHANGED], Phase.PRESTAGED),
    ],
)
def test_illegal_moves_are_refused(path: list[Phase], bad: Phase) -> None:
    run = walk("gpu-1", path)
    with pytest.raises(InvalidTransition, match=f"gpu-1: .* -> {bad}"):
        run.advance(bad, 99.0)


def test_unreachable_host_has_no_known_release() -> None:
    run = walk("gpu-2", [Phase.PRESTAGED, Phase.DRAINED, Phase.UNREACHABLE])
    assert run.after is None and not run.serving


def test_gate_decisions() -> None:
    assert after_prestage(ok=True, reachable=True) is Action.CONTINUE
    assert after_prestage(ok=False, reachable=True) is Action.STOP
    assert after_prestage(ok=True, reachable=False) is Action.STOP
    assert after_switch(verified=True, reachable=True) is Action.REJOIN
    assert after_switch(verified=False, reachable=True) is Action.ROLLBACK
    assert after_switch(verified=False, reachable=False) is Action.STOP


def test_wave_gate_and_exit_code() -> None:
    good = [walk("a", HAPPY), walk("b", HAPPY)]
    assert wave_gate(good).proceed
    assert exit_code([*good, walk("c", [Phase.UNCHANGED])]) == 0
    bad = walk("b", [*HAPPY[:5], Phase.ROLLING_BACK, Phase.ROLLED_BACK])
    bad.detail = "verify failed: completion"
    decision = wave_gate([good[0], bad])
    assert not decision.proceed
    assert decision.reason == "b ended rolled-back: verify failed: completion"
    assert exit_code([good[0], bad]) == 1
    # A host never reached because the rollout stopped also makes the rollout incomplete.
    assert exit_code([good[0], HostRun("c", 1)]) == 1
