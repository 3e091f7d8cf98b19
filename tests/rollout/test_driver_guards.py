"""The driver's own guards, before any host is contacted: a batch that would take the fleet below its
serving floor, or the last serving host out of nginx, stops with nothing changed (the load balancer here
records what it is asked; the hosts are in TEST-NET-1 and never reached)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from ms4fleet.inventory import load_inventory
from ms4fleet.rollout.waves import Policy
from ms4fleet_pyinfra.rollout.driver import Rollout, Stop
from ms4fleet_pyinfra.rollout.session import StateResult
from tests.rollout.test_cli import inventory


class RecordingLb:
    def __init__(self) -> None:
        self.applied: list[set[str]] = []
        self.errors: dict[str, str] = {}

    def apply(self, down: Collection[str]) -> StateResult:
        self.applied.append(set(down))
        return StateResult()


def driver(tmp_path: Path, serving: set[str]) -> tuple[Rollout, RecordingLb]:
    rollout = Rollout(load_inventory(str(inventory(tmp_path, hosts=4))), Policy())
    lb = RecordingLb()
    rollout.lb = lb  # type: ignore[assignment]
    rollout.serving_at_start = set(serving)
    rollout.out_of_lb = set(rollout.specs) - serving
    return rollout, lb


def test_a_batch_holding_the_last_serving_host_stops_before_the_lb_or_any_host(tmp_path: Path) -> None:
    rollout, lb = driver(tmp_path, {"gpu-4"})
    with pytest.raises(Stop, match="gpu-4: switching would leave 0 host\\(s\\) serving, below 3; nothing more"):
        rollout.switch_batch(["gpu-4"])
    assert lb.applied == [] and rollout.out_of_lb == {"gpu-1", "gpu-2", "gpu-3"}
    assert {run.phase for run in rollout.tracker.runs.values()} == {"pending"}


def test_routing_every_host_out_once_any_served_is_refused(tmp_path: Path) -> None:
    rollout, lb = driver(tmp_path, {"gpu-4"})
    rollout.out_of_lb.add("gpu-4")
    with pytest.raises(Stop, match="would take the last serving host out of the load balancer"):
        rollout.route("drain")
    assert lb.applied == []
    # A first install (nothing served) leaves nginx as it is instead.
    rollout.serving_at_start = set()
    rollout.route("drain")
    assert lb.applied == []
    rollout.out_of_lb.discard("gpu-1")
    rollout.route("rejoin")
    assert lb.applied == [{"gpu-2", "gpu-3", "gpu-4"}]
