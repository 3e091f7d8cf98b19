"""The driver's own guards, before any host is contacted: a batch that would take the fleet below its
serving floor, or the last serving host out of nginx, stops with nothing changed (the load balancer here
records what it is asked; the hosts are in TEST-NET-1 and never reached)."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import pytest

from ms4fleet.inventory import load_inventory
from ms4fleet.rollout.waves import Policy
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.peers import Member, PeerOutcome, TreeReport
from ms4fleet.weights.tree import Limits, plan_tree
from ms4fleet_pyinfra.rollout import driver as driver_module
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


def peer_inventory(tmp_path: Path, fanouts: tuple[int, ...]) -> Path:
    """The rollout tests' inventory, each host with peer staging on and its own fan-out."""
    path = inventory(tmp_path, hosts=len(fanouts))
    weights = {"source": "mirror", "mirror_url": "http://127.0.0.1:9/", "allow_insecure": True, "peers": True}
    lines = [path.read_text(), "_hosts = dict(gpus[0])"]
    for index, fanout in enumerate(fanouts, 1):
        section = {**weights, "revision": "ab" * 20, "peer_fanout": fanout}
        lines.append(f"_hosts['gpu-{index}']['ms4fleet_weights'] = {section!r}")
    lines.append("gpus = (list(_hosts.items()), gpus[1])")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_peer_staging_takes_every_host_through_one_tree_before_any_is_drained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollout = Rollout(load_inventory(str(peer_inventory(tmp_path, (2, 2, 2)))), Policy())
    calls: list[list[str]] = []

    def fake(members: list[Member], staged: object, address: object, progress: object = None) -> TreeReport:
        calls.append([m.name for m in members])
        outcomes = [PeerOutcome(m.name, "staged" if m.name != "gpu-3" else "failed", "x") for m in members]
        return TreeReport(outcomes, plan_tree([m.name for m in members], [], Limits()))

    monkeypatch.setattr(driver_module, "stage_group", fake)
    with pytest.raises(Stop, match="gpu-3: peer staging: x; nothing was stopped"):
        rollout.peer_stage({"gpu-1", "gpu-2", "gpu-3"})
    assert calls == [["gpu-1", "gpu-2", "gpu-3"]]
    assert {run.phase for run in rollout.tracker.runs.values()} == {"pending"}


def test_peer_staging_hosts_must_share_one_fanout(tmp_path: Path) -> None:
    with pytest.raises(
        WeightsError, match=re.escape("gpu-2: weights.peer_fanout/peer_seeds (3/1) differ from gpu-1's")
    ):
        Rollout(load_inventory(str(peer_inventory(tmp_path, (2, 3)))), Policy())
