"""bench/rollout_timing.py fails (exit 1) when a host's serving gap misses the issue's target."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from ms4fleet.rollout.hoststate import HostRun, Phase
from ms4fleet.rollout.report import RolloutReport
from ms4fleet.rollout.waves import Policy, plan_waves

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rollout_timing", ROOT / "bench" / "rollout_timing.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def switched(name: str, drained: float, rejoined: float, ready: float | None) -> HostRun:
    run = HostRun(name, 1, before="a", target="b")
    for phase, t in [
        (Phase.PRESTAGED, 0.0),
        (Phase.DRAINED, drained),
        (Phase.STOPPED, drained + 0.5),
        (Phase.STARTED, rejoined - 1),
        (Phase.VERIFIED, rejoined - 0.5),
        (Phase.REJOINED, rejoined),
    ]:
        run.advance(phase, t)
    run.start_to_ready_s = ready
    return run


def report(*runs: HostRun) -> RolloutReport:
    names = [r.name for r in runs]
    return RolloutReport("inv.py", "pyinfra", "t", plan_waves(names, set(names), Policy()), list(runs), 10.0)


def test_the_target_holds_only_within_one_point_one_start_to_ready(bench: ModuleType) -> None:
    assert bench.TARGET == 1.1
    assert bench.missed(report(switched("gpu-1", 1.0, 66.0, 62.0), switched("gpu-2", 70.0, 138.0, 62.0))) == []
    (line,) = bench.missed(report(switched("gpu-1", 1.0, 66.0, 62.0), switched("gpu-2", 70.0, 140.0, 62.0)))
    assert line.startswith("gpu-2: out of the LB 70.00s = 1.129 x start-to-ready 62.00s")
    # Not measured is not a pass: a switched host without start-to-ready, or no host switched at all.
    assert bench.missed(report(switched("gpu-1", 1.0, 66.0, None))) == [
        "gpu-1: gap or start-to-ready not measured (rejoined)"
    ]
    assert bench.missed(report(HostRun("gpu-1", 1))) == ["no host was switched: nothing measured"]
