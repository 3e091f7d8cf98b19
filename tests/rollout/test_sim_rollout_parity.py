"""The same three faults through both rollout engines, on the rollout fleet (after test_sim_rollout_ansible.py,
whose release is the baseline here; alone, the baseline is a first install): `ms4fleet rollout` (pyinfra) and
playbooks/rollout.yml (Ansible) must leave the same hosts behind: unit files and their state, the release
records, and the load balancer's upstream.

On the canary host (rollout-1), from the baseline (2 replicas of tensor parallel 1):
1. shrink: one replica of tensor parallel 2; the second unit is stopped and removed, not left holding a GPU;
2. grow, then fail: back to 2 replicas, but the new release's engine dies on its first decode: the host goes
   back to its 1-replica release, the unit only the failed release added is stopped and removed, and the
   host rejoins the load balancer;
3. the same, and the previous release fails its check too (the host's own fault switch): the host stays out
   of the load balancer.
Between the engines another release of the canary is rolled out with `ms4fleet rollout`, interrupted by
SIGTERM once the canary is stopped (exit 130, report written, the canary left out of the load balancer) and
finished with `--resume`; then the baseline again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ms4fleet import paths
from ms4fleet.inventory import load_inventory
from ms4fleet.rollout.journal import JOURNAL_NAME, Journal, fleet_dir, unfinished
from ms4fleet.rollout.release import RELEASE_FILE, release_for
from ms4fleet.serving import plan_host
from ms4fleet_pyinfra.rollout.driver import INTERRUPTED
from tests.rollout.test_sim_rollout import CRASH_FILE, lb_conf, rollout
from tests.rollout.test_sim_rollout_ansible import failures, playbook
from tests.rollout.world import World

pytestmark = [pytest.mark.sim, pytest.mark.slow]

CANARY = "rollout-1"
# The release test_sim_rollout_ansible.py leaves on every host (revision A): no host but the canary changes.
BASE: dict[str, Any] = {"max_num_seqs": 48}
SCENARIOS = ("shrink", "grow-then-fail", "rollback-fails")
# What each engine left after each scenario (the first test fills it, the last compares).
LEFT: dict[str, dict[str, dict[str, Any]]] = {}


def canary_settings(world: World, scenario: str) -> dict[str, dict[str, Any]]:
    if scenario == "shrink":
        return {CANARY: world.settings(**BASE, tensor_parallel_size=2)}
    # 2 replicas again, and an engine that dies on its first decode.
    return {CANARY: world.settings(**BASE, env={"MS4FLEET_SIM_FAULTS_FILE": CRASH_FILE})}


def host_by_name(world: World, name: str) -> Any:
    return next(h for h in world.gpu if h.name == name)


def left(world: World, scenario: str) -> dict[str, Any]:
    """Per GPU host: each replica unit file with whether it is enabled and active, and the ids its release
    record holds; the load balancer's whole config. The failed host's unit keeps restarting after its crash
    (Restart=always), so only its presence is compared in the last scenario."""
    hosts: dict[str, Any] = {}
    for host in world.gpu:
        units = host.sudo(
            f"cd {paths.SYSTEMD_DIR} && for u in {paths.UNIT_PREFIX}-*.service; do [ -f $u ] && "
            'echo "$u $(systemctl is-enabled $u) $(systemctl is-active $u)"; done; true'
        ).stdout.split("\n")
        units = [line for line in units if line]
        if scenario == "rollback-fails" and host.name == CANARY:
            units = [line.split()[0] for line in units]
        record = json.loads(host.sudo(f"cat {RELEASE_FILE}").stdout)
        hosts[host.name] = {
            "units": units,
            "current": record["current"]["id"],
            "previous": (record["previous"] or {}).get("id"),
            "plan recorded": "plan" in record["current"],
        }
    return {"hosts": hosts, "lb": lb_conf(world)}


def target(inventory: Path, name: str = CANARY) -> str:
    spec = next(s for s in load_inventory(inventory) if s.name == name)
    return release_for(spec.config, plan_host(spec.config)).id


def prepare(world: World, scenario: str) -> None:
    canary = host_by_name(world, CANARY)
    canary.sudo(f"mkdir -p /etc/ms4fleet-test && echo '{{\"crash_on_first_decode\": true}}' > {CRASH_FILE}")
    if scenario == "rollback-fails":
        world.faults(canary, crash_on_first_decode=True)


def check_scenario(world: World, scenario: str, state: dict[str, Any], ids: dict[str, str]) -> None:
    """What each scenario must leave, whichever engine ran it."""
    canary = state["hosts"][CANARY]
    assert canary["current"] == ids["shrink"] and canary["previous"] == ids["base"], (scenario, canary)
    assert canary["plan recorded"]
    down = [line for line in state["lb"].splitlines() if " down;" in line]
    if scenario == "rollback-fails":
        assert canary["units"] == ["ms4fleet-vllm-0.service"], canary
        assert down and all(line.endswith(f"# {CANARY}") for line in down), state["lb"]
    else:
        assert canary["units"] == ["ms4fleet-vllm-0.service enabled active"], (scenario, canary)
        assert down == [], state["lb"]
    for name, host in state["hosts"].items():
        if name != CANARY:
            assert host["current"] == ids["base"], (scenario, name, host)
            assert host["units"] == [f"ms4fleet-vllm-{i}.service enabled active" for i in (0, 1)], (name, host)


def test_pyinfra_rollout_shrinks_rolls_back_added_units_and_keeps_a_failed_host_out(
    rollout_world: World, tmp_path: Path
) -> None:
    base = rollout_world.inventory("parity-base", **BASE)
    code, report = rollout(rollout_world, base, tmp_path / "base", "--canary", "1")
    assert code == 0, report["stopped"]
    ids = {"base": target(base)}
    try:
        for scenario in SCENARIOS:
            prepare(rollout_world, scenario)
            inventory = rollout_world.inventory(
                f"parity-{scenario}", host_settings=canary_settings(rollout_world, scenario), **BASE
            )
            ids.setdefault(scenario, target(inventory))
            code, report = rollout(rollout_world, inventory, tmp_path / scenario, "--canary", "1")
            phase = report["hosts"][0]["phase"]
            assert (code, phase) == {
                "shrink": (0, "rejoined"),
                "grow-then-fail": (1, "rolled-back"),
                "rollback-fails": (1, "failed"),
            }[scenario], report["stopped"]
            LEFT.setdefault("pyinfra", {})[scenario] = state = left(rollout_world, scenario)
            check_scenario(rollout_world, scenario, state, ids)
    finally:
        rollout_world.faults(host_by_name(rollout_world, CANARY))


def test_sigterm_mid_rollout_writes_the_report_then_resume_completes(rollout_world: World, tmp_path: Path) -> None:
    """A release that changes the canary (left failed and out of the LB by the previous test): SIGTERM once
    the canary's old replica is stopped: exit 130, the report says so, the canary stays out of nginx;
    --resume completes and its report covers both runs."""
    base = rollout_world.inventory(
        "parity-sigterm", host_settings={CANARY: rollout_world.settings(**{**BASE, "max_num_seqs": 40})}, **BASE
    )
    journal = Journal(fleet_dir([h.name for h in rollout_world.gpu]) / JOURNAL_NAME)
    options = ["--lb-inventory", str(rollout_world.lb_inventory()), "--canary", "1"]
    command = [str(Path(sys.executable).with_name("ms4fleet")), "rollout", str(base), *options]
    controller = subprocess.Popen(
        [*command, "--report-dir", str(tmp_path / "terminated")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 300
        while not any(e.get("host") == CANARY and e.get("phase") == "stopped" for e in journal.read()):
            assert controller.poll() is None and time.monotonic() < deadline, controller.communicate()[0]
            time.sleep(0.1)
        controller.send_signal(signal.SIGTERM)
        out = controller.communicate(timeout=120)[0].decode()
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait()
    assert controller.returncode == 130, out
    report = json.loads((tmp_path / "terminated" / "rollout.json").read_text())
    assert report["stopped"] == INTERRUPTED
    assert journal.read()[-1]["event"] == "interrupted" and unfinished(journal.read())
    assert "down;" in lb_conf(rollout_world) and all(
        line.endswith(f"# {CANARY}") for line in lb_conf(rollout_world).splitlines() if " down;" in line
    )

    code, resumed = rollout(rollout_world, base, tmp_path / "resumed", *options[2:], "--resume")
    assert code == 0, resumed["stopped"]
    (earlier,) = resumed["earlier_runs"]
    assert earlier["ended"] == "interrupted"
    assert {h["host"]: h["phase"] for h in resumed["hosts"]}[CANARY] == "rejoined"
    assert "down;" not in lb_conf(rollout_world)
    assert journal.read()[-1]["event"] == "end" and not unfinished(journal.read())


def test_ansible_rollout_leaves_the_same_hosts_as_pyinfra(rollout_world: World, tmp_path: Path) -> None:
    assert set(LEFT.get("pyinfra", {})) == set(SCENARIOS), "runs after the pyinfra scenarios"
    base = rollout_world.inventory("parity-base", **BASE)
    ids = {"base": target(base)}
    code, report = rollout(rollout_world, base, tmp_path / "base", "--canary", "1")
    assert code == 0, report["stopped"]
    # Only the canary and the load balancer: the other hosts are unchanged (skipped alike without the limit).
    options = ("-e", "rollout_canary=1", "--limit", f"{CANARY}:ms4fleet_lb")
    try:
        for scenario in SCENARIOS:
            prepare(rollout_world, scenario)
            settings = canary_settings(rollout_world, scenario)
            ids.setdefault(
                scenario, target(rollout_world.inventory(f"parity-{scenario}", host_settings=settings, **BASE))
            )
            inventory = rollout_world.ansible_inventory(f"parity-{scenario}", host_settings=settings, **BASE)
            run = playbook(inventory, *options)
            assert (run.returncode == 0) == (scenario == "shrink"), failures(run)
            LEFT.setdefault("ansible", {})[scenario] = state = left(rollout_world, scenario)
            check_scenario(rollout_world, scenario, state, ids)
    finally:
        rollout_world.faults(host_by_name(rollout_world, CANARY))
    for scenario in SCENARIOS:
        assert LEFT["ansible"][scenario] == LEFT["pyinfra"][scenario], scenario
    # The pyinfra rollout takes over from the Ansible one's failure: the canary, out and failed, switches first.
    code, report = rollout(rollout_world, base, tmp_path / "after", "--canary", "1")
    assert code == 0, report["stopped"]
    assert "down;" not in lb_conf(rollout_world)
