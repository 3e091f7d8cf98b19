"""The GPU drain's guards on the controller, before any host is contacted (the hosts are in TEST-NET-1 and
never reached): bad input fails at once, a healthy fleet needs no host, and a running rollout holds the
fleet lock so the pass drains nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ms4fleet.config import ConfigError
from ms4fleet.health import parse_health
from ms4fleet.inventory import load_inventory
from ms4fleet.rollout.journal import FleetLock, fleet_dir
from ms4fleet_pyinfra.healthdrain import Drainer
from ms4fleet_pyinfra.rollout.lbctl import LbHost
from tests.rollout.test_cli import inventory
from tests.unit.test_drain import xid_on
from tests.unit.test_health_placement import eight

LB = [LbHost("lb-1", {"ssh_hostname": "192.0.2.100"})]


def test_a_replica_on_loopback_is_refused_before_any_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"serving\.bind_address"):
        Drainer(load_inventory(str(inventory(tmp_path, bind="127.0.0.1"))), LB)


def test_healthy_gpus_drain_nothing_and_contact_no_host(tmp_path: Path) -> None:
    drainer = Drainer(load_inventory(str(inventory(tmp_path))), LB)
    healthy = parse_health(eight(count=2), "gpu-1")
    outcome = drainer.run({"gpu-1": healthy, "gpu-2": None})
    assert outcome.ok and outcome.lines() == [] and outcome.to_json()["drained"] == []


def test_a_running_rollout_holds_the_lock_and_the_pass_drains_nothing(tmp_path: Path) -> None:
    drainer = Drainer(load_inventory(str(inventory(tmp_path))), LB)
    lock = FleetLock(fleet_dir(["gpu-1", "gpu-2"]))
    lock.acquire()
    try:
        outcome = drainer.run({"gpu-1": parse_health(xid_on(1, 79, count=2), "gpu-1")})
    finally:
        lock.release()
    (line,) = outcome.lines()
    assert line.startswith("another rollout of this fleet is running (user ")
    assert line.endswith("; nothing drained this pass") and not outcome.ok
    assert outcome.drained == [] and outcome.already_out == []
