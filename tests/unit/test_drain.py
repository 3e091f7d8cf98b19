"""Which replicas leave service when a GPU goes bad under them (``ms4fleet.drain``), and the rule that
the fleet's last serving backend stays in."""

from __future__ import annotations

import json

import pytest

from ms4fleet.drain import Leaving, leaving, plan_drain
from ms4fleet.health import parse_health
from ms4fleet.rollout.lb import Backend
from ms4fleet.serving import plan_host
from tests.unit.test_health_placement import eight, host


def xid_on(gpu: int, xid: int, count: int = 8) -> str:
    """The real H200 capture on ``count`` GPUs, with NVML delivering Xid ``xid`` for GPU ``gpu`` while watched."""
    raw = json.loads(eight(count=count))
    raw["xid_watch"] = {"seconds": 5.0, "events": {raw["gpus"][gpu]["pci_bus_id"]: [xid]}}
    return json.dumps(raw)


def test_a_runtime_xid_makes_the_replica_on_that_gpu_leave() -> None:
    plan = plan_host(host())  # 8 x H200 at TP2: replicas on 0-1, 2-3, 4-5, 6-7
    (item,) = leaving(parse_health(xid_on(5, 79), "gpu-1"), plan)
    assert (item.host, item.replica, item.gpus, item.port, item.unit) == (
        "gpu-1",
        2,
        (4, 5),
        8002,
        "ms4fleet-vllm-2.service",
    )
    assert item.reason == "GPU 5 unhealthy: Xid 79: GPU has fallen off the bus (NVML event while watching)"
    assert item.label == "gpu-1 replica 2 (GPUs 4,5, port 8002)"
    (ecc,) = leaving(parse_health(xid_on(0, 48), "gpu-1"), plan)
    assert ecc.replica == 0 and "double-bit ECC error" in ecc.reason


def test_a_healthy_or_application_xid_reading_drains_nothing() -> None:
    plan = plan_host(host())
    assert leaving(parse_health(eight(), "gpu-1"), plan) == ()
    # Xid 13 is the application's fault, 63 a warning: neither takes a replica out.
    assert leaving(parse_health(xid_on(3, 13), "gpu-1"), plan) == ()
    assert leaving(parse_health(xid_on(3, 63), "gpu-1"), plan) == ()


def test_a_gpu_gone_from_the_listing_drains_its_replica() -> None:
    raw = json.loads(eight())
    del raw["gpus"][6]
    (item,) = leaving(parse_health(json.dumps(raw), "gpu-1"), plan_host(host()))
    assert item.replica == 3 and "not listed by nvml (7 of 8 GPUs answered)" in item.reason


B = [Backend("a", "10.0.0.1", 8000), Backend("a", "10.0.0.1", 8001), Backend("b", "10.0.0.2", 8000)]
ALL_ACTIVE = {(b.host, b.port): True for b in B}


def item(host: str, port: int, replica: int = 0) -> Leaving:
    return Leaving(host, replica, (replica,), port, f"ms4fleet-vllm-{replica}.service", f"GPU {replica} unhealthy: x")


def test_drain_one_backend_of_a_host_and_keep_the_others() -> None:
    plan = plan_drain([item("a", 8001, 1)], B, set(), ALL_ACTIVE)
    assert [(i.port, b) for i, b in plan.drain] == [(8001, B[1])]
    assert plan.down == {B[1]} and plan.done == () and plan.refused == ()


def test_a_second_pass_does_nothing_and_a_half_done_drain_is_finished() -> None:
    stopped = {**ALL_ACTIVE, ("a", 8001): False}
    again = plan_drain([item("a", 8001, 1)], B, {B[1]}, stopped)
    assert again.drain == () and [i.port for i in again.done] == [8001] and again.down == {B[1]}
    # Down in nginx but the unit still runs (a pass interrupted before the stop): stop it now.
    half = plan_drain([item("a", 8001, 1)], B, {B[1]}, ALL_ACTIVE)
    assert [b for _, b in half.drain] == [B[1]]
    # Stopped but still routed to (a unit that died of the fault): mark it down.
    dead = plan_drain([item("a", 8001, 1)], B, set(), stopped)
    assert [b for _, b in dead.drain] == [B[1]] and dead.down == {B[1]}


def test_the_last_serving_backend_is_never_drained() -> None:
    # b is drained already; a's two replicas both sit on bad GPUs: one goes, the last one stays, refused.
    plan = plan_drain([item("a", 8000, 0), item("a", 8001, 1)], B, {B[2]}, {**ALL_ACTIVE, ("b", 8000): False})
    assert [b for _, b in plan.drain] == [B[0]]
    ((kept, line),) = plan.refused
    assert kept.port == 8001 and plan.down == {B[0], B[2]}
    assert line.startswith("refused: a replica 1 (GPUs 1, port 8001) is the last serving backend of the fleet;")
    assert "\n" not in line
    # A replica whose unit is not running does not count as serving.
    lone = plan_drain([item("a", 8000, 0)], B, set(), {("a", 8000): True})
    assert lone.drain == () and len(lone.refused) == 1


def test_a_replica_the_load_balancer_does_not_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a backend of the load balancer"):
        plan_drain([item("c", 8000)], B, set(), ALL_ACTIVE)


def test_drain_options_are_checked_before_any_host(capsys: pytest.CaptureFixture[str]) -> None:
    from ms4fleet.cli import main

    assert main(["health", "no-such-inventory.py", "--drain"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "ms4fleet: error: --drain needs --lb-inventory FILE (the load balancer to drain from)"
    assert main(["health", "no-such-inventory.py", "--watch"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "ms4fleet: error: --watch and --lb-inventory go with --drain"
