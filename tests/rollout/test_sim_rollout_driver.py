"""Issue 16: a driver branch change on the 4 hosts of the rollout world through ``ms4fleet rollout``, under
client load through nginx while the sampler counts the hosts serving every 0.25 s: each host is drained,
gets the 570 branch (the 580 driver's hold released, the new one installed and held), reboots and rejoins,
one batch at a time; no client request fails and never fewer than 3 hosts serve.

On the serving world of test_sim_rollout_deploy.py (release R0 rolled out and deployed once, so each
record holds the plan with the 580 driver).
"""

from __future__ import annotations

import itertools
import runpy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ms4fleet_sim import packages
from ms4fleet_sim.inventories import py_literal
from tests.rollout.test_sim_rollout import rollout
from tests.rollout.test_sim_rollout_deploy import check_kept_serving, py_inventory, serving_world, under_load
from tests.rollout.world import World

pytestmark = [pytest.mark.sim, pytest.mark.slow]
__all__ = ["serving_world"]  # the fixture this module's test runs on

BRANCH = "570"
VERSION = packages.DRIVERS[BRANCH].version


def _when(text: str) -> datetime:
    """Docker's StartedAt (nanoseconds, Z) as a datetime."""
    head, _, rest = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(tzinfo=UTC) + timedelta(seconds=float(f"0.{rest or 0}"[:8]))


def driver_inventory(world: World, name: str) -> Path:
    """R0's inventory with the driver moved to another branch (the sim repository carries 580 and 570)."""
    path = py_inventory(world, name, max_num_seqs=40)
    hosts, shared = runpy.run_path(str(path))["gpus"]
    shared["ms4fleet_provision"] = {
        **shared["ms4fleet_provision"],
        "driver_branch": int(BRANCH),
        "driver_version": VERSION,
    }
    path.write_text(f"gpus = {py_literal((hosts, shared))}\n", encoding="utf-8")
    return path


def test_a_driver_branch_change_reboots_one_batch_at_a_time(serving_world: World, tmp_path: Path) -> None:
    world = serving_world
    booted = {h.name: h.started_at() for h in world.gpu}
    inventory = driver_inventory(world, "driver-570")
    (code, report), load, serving = under_load(
        world,
        inventory,
        lambda: rollout(world, inventory, tmp_path / "report", "--canary", "1", "--wave", "1"),
    )
    assert code == 0, report["stopped"]
    check_kept_serving(load, serving)
    print(f"{load.result.ok} requests, least serving {serving.samples.least}, {report['duration_s']:.0f} s")

    start = datetime.fromisoformat(report["started_at"].replace("Z", "+00:00"))
    windows = []
    for run in report["hosts"]:
        assert run["change"] == "reboot" and run["phase"] == "rejoined", run
        assert any(r.startswith("packages driver") for r in run["change_reasons"]), run["change_reasons"]
        t = {step["phase"]: step["t"] for step in run["history"]}
        windows.append((t["drained"], t["rejoined"], run["host"]))
    windows.sort()
    # One batch (one host: --max-unavailable 1) out of nginx at a time, so one reboot at a time.
    for (_, end, first), (begin, _, second) in itertools.pairwise(windows):
        assert end <= begin, (first, second, windows)
    for host in world.gpu:
        rebooted = host.started_at()
        assert rebooted != booted[host.name], host.name
        drained, rejoined = next((b, e) for b, e, name in windows if name == host.name)
        # The reboot happened while this host, and no other, was out of the load balancer (the report's
        # times count from its start, written to the second).
        at = (_when(rebooted) - start).total_seconds()
        assert drained - 2 <= at <= rejoined + 2, (host.name, at, drained, rejoined)
        smi = host.sudo("nvidia-smi --query-gpu=driver_version --format=csv,noheader").stdout.split()
        assert set(smi) == {VERSION}, (host.name, smi)
        held = host.sudo("apt-mark showhold").stdout.split()
        assert f"nvidia-driver-{BRANCH}-open" in held and "nvidia-driver-580-open" not in held, held
        gone = host.sudo("dpkg-query -W -f '${Status}' nvidia-driver-580-open", check=False).stdout
        assert "installed" not in gone.replace("not-installed", ""), gone
