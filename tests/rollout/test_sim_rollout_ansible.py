"""playbooks/rollout.yml on the simulated fleet (after test_sim_rollout.py, on the same fleet; alone, it
first deploys with the pyinfra driver): the Ansible engine rolls a release out under client load through
nginx with the core's batches, then does nothing when run again.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ms4fleet.inventory import load_inventory
from ms4fleet.rollout.release import release_for
from ms4fleet.serving import plan_host
from ms4fleet_sim.ssh import wait_until_ready
from tests.rollout.load import Load
from tests.rollout.test_sim_rollout import current_release, rollout
from tests.rollout.world import REVISION_B, World, install_native_standin

pytestmark = [pytest.mark.sim, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def failures(run: subprocess.CompletedProcess[str]) -> str:
    """The task lines that failed (what to read first when the playbook does not succeed)."""
    lines = run.stdout.splitlines()
    found = [f"{lines[i - 2]}\n{line[:1500]}" for i, line in enumerate(lines) if line.startswith(("fatal:", "failed:"))]
    return "\n".join(found) or run.stdout[-3000:] + run.stderr[-2000:]


def playbook(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "playbooks/rollout.yml", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def test_playbook_rolls_out_under_load_then_changes_nothing(rollout_world: World, tmp_path: Path) -> None:
    # A host of the previous test was stopped and started again: it rebooted, so its GPU registry is new.
    for host in rollout_world.gpu:
        wait_until_ready(host.endpoint, timeout=120)
        host.close()
        install_native_standin(host)
    # Every host serving one release first (after test_sim_rollout.py: finishing the rollout it stopped).
    code, report = rollout(
        rollout_world, rollout_world.inventory("release-d", revision=REVISION_B, max_num_seqs=32), tmp_path
    )
    assert code == 0, report["stopped"]
    inventory = rollout_world.ansible_inventory("release-e", max_num_seqs=48)
    wanted = {}
    for spec in load_inventory(rollout_world.inventory("release-e-pyinfra", max_num_seqs=48)):
        wanted[spec.name] = release_for(spec.config, plan_host(spec.config)).id
    options = ("-e", "rollout_canary=1", "-e", "rollout_wave=2", "-e", "rollout_max_unavailable=1")
    with Load(rollout_world.lb_url, workers=2) as load:
        load.wait_for(20)
        first = playbook(inventory, *options)
        load.wait_for(load.result.ok + 20)
    assert first.returncode == 0, failures(first)
    for host in rollout_world.gpu:
        assert current_release(rollout_world, host.name)["current"]["id"] == wanted[host.name]
    # Batches as the core plans them: the canary alone, then one host at a time.
    batches = re.findall(r"^PLAY \[Roll out", first.stdout, re.MULTILINE)
    assert len(batches) == 4
    assert load.result.failed == 0, load.result.reasons

    again = playbook(inventory, *options)
    assert again.returncode == 0, failures(again)
    recap = re.findall(r"^(rollout-\d)\s+: ok=\d+\s+changed=(\d+)", again.stdout, re.MULTILINE)
    # Every GPU host in the recap, and nothing changed anywhere (the preflight plays also list the LB host).
    assert {f"rollout-{i}" for i in range(1, 5)} <= {name for name, _ in recap}
    assert [(name, changed) for name, changed in recap if changed != "0"] == []
