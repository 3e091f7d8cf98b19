"""GPU health through both engines on a sim host: the pyinfra fact ``GpuHealth`` and the Ansible module
``ms4fleet.fleet.gpu_health`` run the same reader and the core's rules, so a GPU fault switch excludes the
same GPU with the same reason in both."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ansible import simrun
from tests.pyinfra import simfleet

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "gpuhealth"
HOST = f"{FLEET}-1"
FAULTS = "/etc/nvidia-sim/faults.json"


@pytest.fixture(scope="module")
def fleet() -> Iterator[simfleet.Fleet]:
    fleet = simfleet.ensure_fleet(FLEET, 1, "h200x2")
    try:
        run = simfleet.pyinfra(fleet)  # the simulated driver in and loaded
        assert run.rc == 0, run.output[-3000:]
        # The distribution's nvidia-persistenced unit runs with --no-persistence-mode (as Ubuntu's does), so
        # the deploy leaves persistence off and the check rightly warns; these tests start from a healthy host.
        fleet.sh(HOST, "nvidia-smi -pm 1")
        yield fleet
    finally:
        fleet.down()


def by_pyinfra(fleet: simfleet.Fleet) -> dict[str, Any]:
    argv = [str(simfleet.PYINFRA), "-y", "--sudo", str(fleet.inventory), "fact", "ms4fleet_pyinfra.facts.GpuHealth"]
    done = subprocess.run([*argv, "--json"], cwd=simrun.ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (facts,) = json.loads(done.stdout).values()
    fact = facts[HOST]
    assert fact["error"] == "" and fact["report"], fact
    report: dict[str, Any] = fact["report"]
    return report


def by_ansible(fleet: simfleet.Fleet) -> dict[str, Any]:
    inventory = str(fleet.inventory.with_suffix(".yml"))
    argv = [str(simrun.BIN / "ansible"), "-i", inventory, "all", "-m", "ms4fleet.fleet.gpu_health", "--become", "-o"]
    done = subprocess.run(argv, cwd=simrun.ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    host, _, result = done.stdout.strip().partition(" | SUCCESS => ")
    assert host.strip() == HOST, done.stdout
    answer = json.loads(result)
    report: dict[str, Any] = answer["health"]
    assert answer["usable"] == [g["index"] for g in report["gpus"] if g["verdict"] != "unhealthy"]
    return report


def by_cli(fleet: simfleet.Fleet) -> tuple[int, dict[str, Any]]:
    """``ms4fleet health INVENTORY --json``: its exit code and the host's report."""
    cli = simfleet.PYINFRA.with_name("ms4fleet")
    done = subprocess.run(
        [str(cli), "health", str(fleet.inventory), "--json"], capture_output=True, text=True, check=False
    )
    (row,) = json.loads(done.stdout)
    assert row["host"] == HOST and row["error"] == "", row
    report: dict[str, Any] = row["report"]
    return done.returncode, report


def verdicts(report: dict[str, Any]) -> list[tuple[int, str, list[str]]]:
    return [(g["index"], g["verdict"], [f["reason"] for f in g["findings"]]) for g in report["gpus"]]


@pytest.mark.parametrize(
    ("switch", "verdict", "reason"),
    [
        ({"row_remap_pending": True}, "unhealthy", "a row remap is pending"),
        ({"ecc_uncorrected_volatile": 3}, "unhealthy", "3 uncorrectable ECC error(s) since the last reset"),
        ({"pcie_width": 8}, "degraded", "PCIe link trained at x8 of x16"),
        ({"mig": True}, "unhealthy", "MIG is on (replicas use whole GPUs)"),
    ],
)
def test_both_engines_judge_a_faulty_gpu_the_same(
    fleet: simfleet.Fleet, switch: dict[str, Any], verdict: str, reason: str
) -> None:
    fleet.sh(HOST, f"printf '%s' '{json.dumps({'gpu_health': {'1': switch}})}' > {FAULTS}")
    try:
        pyinfra, ansible = by_pyinfra(fleet), by_ansible(fleet)
        code, cli = by_cli(fleet)
    finally:
        fleet.sh(HOST, f"rm -f {FAULTS}")
    assert pyinfra["source"] == ansible["source"] == "nvidia-smi"
    assert verdicts(pyinfra) == verdicts(ansible) == verdicts(cli)
    assert code == (1 if verdict == "unhealthy" else 0)
    assert [(i, v) for i, v, _ in verdicts(pyinfra)] == [(0, "healthy"), (1, verdict)]
    assert verdicts(pyinfra)[1][2] == [reason]
    # Nothing the sim's nvidia-smi leaves out is judged: it is listed as unsupported, on both GPUs.
    assert {"nvlink", "retired_pages"} <= set(pyinfra["gpus"][0]["unsupported"])


def test_a_healthy_sim_host_is_healthy_in_both_engines(fleet: simfleet.Fleet) -> None:
    code, cli = by_cli(fleet)
    assert code == 0
    assert verdicts(by_pyinfra(fleet)) == verdicts(by_ansible(fleet)) == verdicts(cli)
    assert verdicts(cli) == [(0, "healthy", []), (1, "healthy", [])]
