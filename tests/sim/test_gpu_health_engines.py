"""GPU health through both engines on a sim host: the pyinfra fact ``GpuHealth`` and the Ansible module
``ms4fleet.fleet.gpu_health`` run the same reader and the core's rules, so every GPU fault switch of the sim
excludes the same GPU with the same reason in both, and the plan each engine converges to (pyinfra's deploy,
Ansible's converged check) leaves out the same replica, saying why. Sim hosts have nvidia-ml-py (the
sim's NVML): the reader takes its NVML path; one test removes it and the reader falls back to nvidia-smi."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from ms4fleet import healthwatch
from ms4fleet.burnin import judge
from ms4fleet.catalog import gpu_kinds
from ms4fleet_sim.hostfiles import PYNVML
from tests.ansible import simrun
from tests.pyinfra import simfleet

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "gpuhealth"
HOST = f"{FLEET}-1"
FAULTS = "/etc/nvidia-sim/faults.json"
# The deploy left the health timer running (ms4fleet.healthwatch), whose reading the converged check takes while
# it is fresh: each fault switch is followed by the reading the timer's next run would take.
REFRESH = f"systemctl start {healthwatch.SERVICE}"


@pytest.fixture(scope="module")
def fleet() -> Iterator[simfleet.Fleet]:
    fleet = simfleet.ensure_fleet(FLEET, 1, "h200x2")
    try:
        run = simfleet.pyinfra(fleet)  # the simulated driver in and loaded
        assert run.rc == 0, run.output[-3000:]
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


def ansible_module(fleet: simfleet.Fleet, module: str) -> dict[str, Any]:
    inventory = str(fleet.inventory.with_suffix(".yml"))
    argv = [str(simrun.BIN / "ansible"), "-i", inventory, "all", "-m", module, "--become", "-o"]
    done = subprocess.run(argv, cwd=simrun.ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    answer: dict[str, Any] = json.loads(done.stdout.strip().partition(" | SUCCESS => ")[2])
    return answer


def pyinfra_excluded(fleet: simfleet.Fleet) -> list[dict[str, Any]]:
    argv = [str(simfleet.PYINFRA), "-y", "--sudo", str(fleet.inventory), "fact", "ms4fleet_pyinfra.facts.GpuHealth"]
    done = subprocess.run([*argv, "--json"], cwd=simrun.ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (facts,) = json.loads(done.stdout).values()
    excluded: list[dict[str, Any]] = facts[HOST]["excluded"]
    return excluded


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
    fleet.sh(HOST, f"printf '%s' '{json.dumps({'gpu_health': {'1': switch}})}' > {FAULTS} && {REFRESH}")
    try:
        pyinfra, ansible = by_pyinfra(fleet), by_ansible(fleet)
        code, cli = by_cli(fleet)
    finally:
        fleet.sh(HOST, f"rm -f {FAULTS} && {REFRESH}")
    assert pyinfra["source"] == ansible["source"] == cli["source"] == "nvml"
    assert verdicts(pyinfra) == verdicts(ansible) == verdicts(cli)
    assert code == (1 if verdict == "unhealthy" else 0)
    assert [(i, v) for i, v, _ in verdicts(pyinfra)] == [(0, "healthy"), (1, verdict)]
    assert verdicts(pyinfra)[1][2] == [reason]
    # Nothing the sim leaves out is judged: it is listed as unsupported, on both GPUs.
    assert {"nvlink", "retired_pages"} <= set(pyinfra["gpus"][0]["unsupported"])


def test_without_nvidia_ml_py_both_engines_fall_back_to_nvidia_smi(fleet: simfleet.Fleet) -> None:
    """A host without nvidia-ml-py: the reader's nvidia-smi path, judged as the NVML path is."""
    fault = json.dumps({"gpu_health": {"1": {"row_remap_pending": True}}})
    fleet.sh(HOST, f"mv {PYNVML} {PYNVML}.away && printf '%s' '{fault}' > {FAULTS} && {REFRESH}")
    try:
        pyinfra, ansible = by_pyinfra(fleet), by_ansible(fleet)
        excluded = pyinfra_excluded(fleet)
    finally:
        fleet.sh(HOST, f"rm -f {FAULTS}; mv {PYNVML}.away {PYNVML} && {REFRESH}")
    assert pyinfra["source"] == ansible["source"] == "nvidia-smi"
    assert verdicts(pyinfra) == verdicts(ansible) == [(0, "healthy", []), (1, "unhealthy", ["a row remap is pending"])]
    assert excluded == [{"gpu": 1, "reason": "unhealthy: a row remap is pending"}]
    assert {"nvlink", "retired_pages"} <= set(pyinfra["gpus"][0]["unsupported"])


# Every switch of the sim's nvidia-smi (``HEALTHY`` in sim/src/ms4fleet_sim/nvsim/smi.py) on GPU 1, with the
# verdict and reason the core gives it; None: the switch is read but judged neither way (counters of corrected
# errors, replays only count while watched, fabric state is N/A without an NVSwitch).
SWITCHES = [
    ({"row_remap_pending": True}, "unhealthy", "a row remap is pending"),
    ({"row_remap_failure": True}, "unhealthy", "row remapping failed"),
    ({"ecc_uncorrected_volatile": 3}, "unhealthy", "3 uncorrectable ECC error(s) since the last reset"),
    ({"clocks_event_reasons": 0x8}, "unhealthy", "clocks held down by hw_slowdown"),
    ({"clocks_event_reasons": 0x40}, "unhealthy", "clocks held down by hw_thermal_slowdown"),
    ({"clocks_event_reasons": 0x80}, "unhealthy", "clocks held down by hw_power_brake_slowdown"),
    ({"temperature_c": 95}, "unhealthy", "95 C at its shutdown limit (95 C)"),
    ({"mig": True}, "unhealthy", "MIG is on (replicas use whole GPUs)"),
    ({"ecc_uncorrected_aggregate": 2}, "degraded", "2 uncorrectable ECC error(s) in its lifetime"),
    ({"ecc_mode": False}, "degraded", "ECC is off"),
    ({"banks_without_spare_rows": 2}, "degraded", "2 memory bank(s) have no spare rows left"),
    ({"pcie_width": 8}, "degraded", "PCIe link trained at x8 of x16"),
    ({"pcie_gen": 3, "clocks_event_reasons": 0x4}, "degraded", "PCIe link at gen 3 of 5 while busy"),
    ({"clocks_event_reasons": 0x20}, "degraded", "clocks held down by sw_thermal_slowdown"),
    ({"temperature_c": 90}, "degraded", "90 C at its slowdown limit (89 C)"),
    (
        {
            "ecc_corrected_volatile": 7,
            "ecc_corrected_aggregate": 9,
            "row_remap_correctable": 2,
            "row_remap_uncorrectable": 1,
            "pcie_replays": 4,
            "fabric_state": "In Progress",
        },
        "healthy",
        None,
    ),
]


@pytest.mark.parametrize(("switch", "verdict", "reason"), SWITCHES)
def test_every_switch_excludes_alike_in_both_engines_and_their_plans(
    fleet: simfleet.Fleet, switch: dict[str, Any], verdict: str, reason: str | None
) -> None:
    fleet.sh(HOST, f"printf '%s' '{json.dumps({'gpu_health': {'1': switch}})}' > {FAULTS} && {REFRESH}")
    try:
        pyinfra = pyinfra_excluded(fleet)
        module = ansible_module(fleet, "ms4fleet.fleet.gpu_health")
        converged = ansible_module(fleet, "ms4fleet.fleet.converged")
    finally:
        fleet.sh(HOST, f"rm -f {FAULTS} && {REFRESH}")
    got = [(g["index"], g["verdict"], [f["reason"] for f in g["findings"]]) for g in module["health"]["gpus"]]
    assert got == [(0, "healthy", []), (1, verdict, [reason] if reason else [])]
    want = [{"gpu": 1, "reason": f"unhealthy: {reason}"}] if verdict == "unhealthy" else []
    assert pyinfra == module["excluded"] == converged["excluded"] == want
    # TP2 on the host's two GPUs: the one replica goes with GPU 1, and the plan says so.
    missing = [f"replica 0 (GPUs 0,1, port 8000) not placed: GPU 1 unhealthy: {reason}"]
    assert converged["missing_replicas"] == (missing if want else [])
    if want:
        assert converged["converged"] is False


def test_the_pyinfra_deploy_plans_around_the_gpu_as_ansible_does(fleet: simfleet.Fleet) -> None:
    fleet.sh(
        HOST, f"printf '%s' '{json.dumps({'gpu_health': {'1': {'row_remap_pending': True}}})}' > {FAULTS} && {REFRESH}"
    )
    try:
        run = simfleet.pyinfra(fleet, "--dry")
        converged = ansible_module(fleet, "ms4fleet.fleet.converged")
    finally:
        fleet.sh(HOST, f"rm -f {FAULTS} && {REFRESH}")
    (missing,) = converged["missing_replicas"]
    assert missing == "replica 0 (GPUs 0,1, port 8000) not placed: GPU 1 unhealthy: a row remap is pending"
    assert run.rc == 0, run.output[-3000:]
    assert "GPU 1 excluded: unhealthy: a row remap is pending" in run.output
    assert missing in run.output
    # Not converged: the replica on GPU 1 would be stopped and its unit removed.
    assert "converged (nothing to do)" not in run.output


def test_the_check_takes_the_timers_reading_while_fresh_then_reads_the_gpus_itself(fleet: simfleet.Fleet) -> None:
    """The deploy's health timer keeps a reading the converged check takes instead of starting NVML; a reading
    older than ``FRESH_S`` (a stopped timer) is never taken: the check runs the reader then."""
    reading = healthwatch.READING
    assert fleet.sh(HOST, f"systemctl is-active {healthwatch.TIMER}").strip() == "active"
    assert fleet.sh(HOST, f"systemctl is-enabled {healthwatch.TIMER}").strip() == "enabled"
    # Held still, so that no run of the timer comes between the steps below.
    fleet.sh(HOST, f"systemctl stop {healthwatch.TIMER} && {REFRESH}")
    try:
        assert fleet.sh(HOST, f"systemctl show -P Result {healthwatch.SERVICE}").strip() == "success"
        assert fleet.sh(HOST, f"stat -c '%a %U' {reading}").split() == ["644", "root"]
        kept = json.loads(fleet.sh(HOST, f"cat {reading}"))
        assert kept["source"] == "nvml" and [g["index"] for g in kept["gpus"]] == [0, 1]
        fault = json.dumps({"gpu_health": {"1": {"row_remap_pending": True}}})
        fleet.sh(HOST, f"printf '%s' '{fault}' > {FAULTS}")
        # The fault came after the kept reading, which is fresh: the check takes it and sees no fault yet.
        assert ansible_module(fleet, "ms4fleet.fleet.converged")["excluded"] == []
        # The same reading, older than the check accepts: the check reads the GPUs itself.
        fleet.sh(HOST, f"touch -d '-{healthwatch.FRESH_S + 5} seconds' {reading}")
        stale = ansible_module(fleet, "ms4fleet.fleet.converged")
        assert stale["excluded"] == [{"gpu": 1, "reason": "unhealthy: a row remap is pending"}]
        assert stale["converged"] is False
        # No reading at all (a reboot empties /run): the same.
        fleet.sh(HOST, f"rm {reading}")
        assert ansible_module(fleet, "ms4fleet.fleet.converged")["excluded"] == stale["excluded"]
    finally:
        fleet.sh(HOST, f"rm -f {FAULTS} && systemctl start {healthwatch.TIMER} && {REFRESH}")
    assert fleet.sh(HOST, f"systemctl is-active {healthwatch.TIMER}").strip() == "active"


def test_a_healthy_sim_host_is_healthy_in_both_engines(fleet: simfleet.Fleet) -> None:
    # Persistence mode is on straight after the deploy: the plan's drop-in starts nvidia-persistenced with
    # --persistence-mode (the packaged unit says --no-persistence-mode); nobody ran nvidia-smi -pm 1.
    assert "--persistence-mode" in fleet.sh(HOST, "systemctl cat nvidia-persistenced")
    code, cli = by_cli(fleet)
    assert code == 0
    assert verdicts(by_pyinfra(fleet)) == verdicts(by_ansible(fleet)) == verdicts(cli)
    assert verdicts(cli) == [(0, "healthy", []), (1, "healthy", [])]


def test_the_sim_burn_in_names_the_slowed_pair(fleet: simfleet.Fleet) -> None:
    tool = "/usr/lib/nvidia-sim/bin/nvidia-sim-allreduce --gpus 0,1 --pairs"
    h200 = gpu_kinds()["h200-sxm"]
    healthy = judge(HOST, h200, 2, json.loads(fleet.sh(HOST, tool)))
    assert healthy.ok and healthy.interconnect == "nvlink" and healthy.busbw_gb_s == 360.0
    fleet.sh(HOST, f"""printf '%s' '{json.dumps({"allreduce": {"slow_pairs": {"0-1": 0.3}}})}' > {FAULTS}""")
    try:
        slowed = judge(HOST, h200, 2, json.loads(fleet.sh(HOST, tool)))
    finally:
        fleet.sh(HOST, f"rm -f {FAULTS} && {REFRESH}")
    assert not slowed.ok and slowed.degraded_pairs == ((0, 1),)
    assert slowed.reason.endswith("degraded pair(s): GPUs 0,1 at 108 GB/s")
