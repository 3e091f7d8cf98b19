"""Issue 16: a plain deploy of a serving fleet keeps it serving. Serving flags change on the 4 hosts of the
rollout world with ``pyinfra deploy.py``, with ``ansible-playbook playbooks/site.yml`` and with ``ms4fleet
rollout``, each under client load through nginx, while a sampler counts the hosts serving every 0.25 s: no
client request fails, never fewer than 3 hosts serve, every unit on every host carries the new flags, and a
second run changes nothing. A site.yml run whose canary fails verification rolls it back to its recorded
release, keeps it serving and stops there, as the rollout does.

After test_sim_rollout.py and test_sim_rollout_ansible.py on the same fleet (alone, it first rolls release
R0 out with the pyinfra driver, which also writes the load balancer's config).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ms4fleet import paths
from ms4fleet.inventory import load_inventory
from ms4fleet.rollout.lb import INVENTORY_KEY
from ms4fleet.serving import plan_host
from ms4fleet_sim.inventories import group_data, py_literal
from ms4fleet_sim.ssh import wait_until_ready
from tests.rollout.load import Load
from tests.rollout.serving import ServingSampler, Target
from tests.rollout.test_sim_rollout import CRASH_FILE, host_state, lb_conf, rollout
from tests.rollout.test_sim_rollout_ansible import failures
from tests.rollout.world import World, container_ip, install_native_standin
from tests.support.simhosts import NVIDIA_SOURCES

pytestmark = [pytest.mark.sim, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).with_name("pyinfra")
ANSIBLE = Path(sys.executable).with_name("ansible-playbook")
# The serving flag each step changes (vLLM's --max-num-seqs), one value per step.
FLAG = "--max-num-seqs"


def provision(world: World) -> dict[str, Any]:
    """The sim's NVIDIA apt source, which a whole deploy installs (a rollout alone provisions nothing)."""
    return {"nvidia_apt_repo": group_data(world.sim.record)["ms4fleet_provision"]["nvidia_apt_repo"]}


def py_inventory(world: World, name: str, **serving: Any) -> Path:
    """The world's pyinfra inventory of one release, with the sim's apt source for the deploy."""
    path = world.inventory(name, **serving)
    shared = {**world.settings(**serving), "ms4fleet_provision": provision(world)}
    shared["weights_staging_dir"] = str(world.root / "staging")
    hosts = [
        (
            h.name,
            {
                **world._connection(h),
                "lb_backend_address": container_ip(h.container, world.sim.record.network),
                "ms4fleet_gpu": {"kind": h.gpu_kind, "count": h.gpu_count},
            },
        )
        for h in world.gpu
    ]
    path.write_text(f"gpus = {py_literal((hosts, shared))}\n", encoding="utf-8")
    return path


def yml_inventory(world: World, name: str, provisioning: dict[str, Any] | None = None, **serving: Any) -> Path:
    path = world.ansible_inventory(name, **serving)
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["all"]["children"]["ms4fleet_gpu"]["vars"]["ms4fleet_provision"] = {**provision(world), **(provisioning or {})}
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def deploy(world: World, inventory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PYINFRA), "-y", str(inventory), str(ROOT / "deploy.py"),
         "--data", f"{INVENTORY_KEY}={world.lb_inventory()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip


def site(inventory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ANSIBLE), "-i", str(inventory), "playbooks/site.yml", "-e", "fleet_hosts=ms4fleet_gpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip


def sampler(world: World, inventory: Path) -> ServingSampler:
    """Samples the GPU hosts of ``inventory`` (a pyinfra one: the Ansible one lists the LB host too)."""
    network = world.sim.record.network
    targets = []
    for spec in load_inventory(inventory):
        host = next(h for h in world.gpu if h.name == spec.name)
        ip = container_ip(host.container, network)
        targets.append(Target(spec.name, tuple(f"http://{ip}:{r.port}" for r in plan_host(spec.config).replicas)))
    return ServingSampler(world.lb.container, targets)


def units_carry(world: World, value: int) -> dict[str, list[str]]:
    """Per host, the vLLM units whose ExecStart does not carry ``FLAG value`` (empty: all do)."""
    wrong = {}
    for host in world.gpu:
        out = host.sudo(f"grep -L -e '{FLAG} {value}' {paths.SYSTEMD_DIR}/{paths.UNIT_PREFIX}-*.service || true")
        count = host.sudo(f"ls {paths.SYSTEMD_DIR}/{paths.UNIT_PREFIX}-*.service | wc -l").stdout.strip()
        assert count == "2", (host.name, count)
        wrong[host.name] = out.stdout.split()
    return wrong


def under_load(world: World, hosts: Path, change: Any, max_requests: int = 500_000) -> tuple[Any, Load, ServingSampler]:
    with Load(world.lb_url, workers=2, max_requests=max_requests) as load, sampler(world, hosts) as serving:
        load.wait_for(20)
        result = change()
        load.wait_for(load.result.ok + 20)
    return result, load, serving


def check_kept_serving(load: Load, serving: ServingSampler) -> None:
    assert load.result.failed == 0, load.result.reasons
    assert serving.samples.largest_gap_s() <= 0.5, serving.samples.largest_gap_s()
    assert serving.samples.least >= 3, [n for _, n in serving.samples.points]


@pytest.fixture(scope="module")
def serving_world(rollout_world: World, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Every host serving release R0, rolled out (record and LB config), then deployed once (the deploy's
    provisioning in place). The harness's own apt source names the sim's repository that the deploy names
    under ms4fleet's pinned key, and apt refuses two keys for one source."""
    for host in rollout_world.gpu:
        wait_until_ready(host.endpoint, timeout=120)
        host.close()
        install_native_standin(host)
        host.sudo(f"rm -f {NVIDIA_SOURCES}")
    inventory = py_inventory(rollout_world, "deploy-r0", max_num_seqs=40)
    code, report = rollout(rollout_world, inventory, tmp_path_factory.mktemp("r0"))
    assert code == 0, report["stopped"]
    first = deploy(rollout_world, inventory)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    return rollout_world


def test_deploy_py_changes_serving_flags_one_batch_at_a_time(serving_world: World) -> None:
    inventory = py_inventory(serving_world, "deploy-r1", max_num_seqs=56)
    run, load, serving = under_load(serving_world, inventory, lambda: deploy(serving_world, inventory))
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    check_kept_serving(load, serving)
    assert units_carry(serving_world, 56) == {h.name: [] for h in serving_world.gpu}
    # The batches ran (the core's default: canary, then one host at a time), each host drained and rejoined.
    assert len(re.findall(r"batched deploy: rejoined", output)) == 4, output[-4000:]

    before = host_state(serving_world)
    again = deploy(serving_world, inventory)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "batched deploy:" not in again.stdout + again.stderr
    assert host_state(serving_world) == before


def test_site_yml_changes_serving_flags_one_batch_at_a_time(serving_world: World) -> None:
    inventory = yml_inventory(serving_world, "site-r2", max_num_seqs=64)
    hosts = py_inventory(serving_world, "site-r2-hosts", max_num_seqs=64)
    run, load, serving = under_load(serving_world, hosts, lambda: site(inventory))
    assert run.returncode == 0, failures(run)
    check_kept_serving(load, serving)
    assert units_carry(serving_world, 64) == {h.name: [] for h in serving_world.gpu}
    batches = re.split(r"^PLAY \[Change serving hosts.*$", run.stdout, flags=re.MULTILINE)[1:]
    assert len(batches) == 4, run.stdout[-3000:]
    # The core's order (canary first, then inventory order), not the order the hosts' results arrived in.
    first_host = [re.search(r"^\w+: \[(rollout-\d)\]", batch, re.MULTILINE) for batch in batches]
    assert [m and m.group(1) for m in first_host] == [h.name for h in serving_world.gpu], run.stdout[-3000:]

    before = host_state(serving_world)
    again = site(inventory)
    assert again.returncode == 0, failures(again)
    recap = re.findall(r"^(rollout-\d)\s+: ok=\d+\s+changed=(\d+)", again.stdout, re.MULTILINE)
    assert {f"rollout-{i}" for i in range(1, 5)} <= {name for name, _ in recap}
    assert [(name, changed) for name, changed in recap if changed != "0"] == []
    assert host_state(serving_world) == before


def test_site_yml_rolls_a_failing_canary_back_and_stops(serving_world: World) -> None:
    """The release site.yml recorded (64) stays: the canary's new engine dies on its first decode, so the
    canary goes back to its recorded units, rejoins once they are checked again, and no other host changes."""
    canary = serving_world.gpu[0].name
    for host in serving_world.gpu:
        host.sudo(f"mkdir -p /etc/ms4fleet-test && echo '{{\"crash_on_first_decode\": true}}' > {CRASH_FILE}")
    inventory = yml_inventory(
        serving_world, "site-crash", max_num_seqs=64, env={"MS4FLEET_SIM_FAULTS_FILE": CRASH_FILE}
    )
    hosts = py_inventory(serving_world, "site-crash-hosts", max_num_seqs=64)
    before, conf_before = host_state(serving_world), lb_conf(serving_world)
    try:
        run, load, serving = under_load(serving_world, hosts, lambda: site(inventory))
    finally:
        for host in serving_world.gpu:
            host.sudo(f"rm -f {CRASH_FILE}")
    assert run.returncode != 0, run.stdout[-3000:]
    assert f"{canary} rolled back to " in run.stdout, failures(run)
    check_kept_serving(load, serving)
    # Only the canary's batch ran; the play ended there.
    assert len(re.findall(r"^PLAY \[Change serving hosts", run.stdout, re.MULTILINE)) == 1, run.stdout[-3000:]
    after = host_state(serving_world)
    assert {n: s for n, s in after.items() if n != canary} == {n: s for n, s in before.items() if n != canary}
    # The canary runs its recorded units again (their bytes), and its record still names that release.
    assert after[canary]["record"] == before[canary]["record"]
    sha = [line.split()[:2] for line in before[canary]["units"].splitlines()]
    assert [line.split()[:2] for line in after[canary]["units"].splitlines()] == sha
    assert all(line.endswith(" active") for line in after[canary]["units"].splitlines()), after[canary]
    assert lb_conf(serving_world) == conf_before
    assert units_carry(serving_world, 64) == {h.name: [] for h in serving_world.gpu}


def test_ms4fleet_rollout_changes_serving_flags_one_batch_at_a_time(serving_world: World, tmp_path: Path) -> None:
    inventory = py_inventory(serving_world, "rollout-r3", max_num_seqs=72)
    (code, report), load, serving = under_load(
        serving_world, inventory, lambda: rollout(serving_world, inventory, tmp_path / "r3")
    )
    assert (code, report["outcome"]) == (0, "complete"), report["stopped"]
    check_kept_serving(load, serving)
    assert units_carry(serving_world, 72) == {h.name: [] for h in serving_world.gpu}

    before = host_state(serving_world)
    code, again = rollout(serving_world, inventory, tmp_path / "again")
    assert (code, again["outcome"]) == (0, "no-op")
    assert host_state(serving_world) == before


def test_site_yml_applies_a_live_change_in_service(serving_world: World) -> None:
    """A change that restarts nothing (the reboot policy: the core's ``live``) goes through site.yml's wide
    plays: no host leaves nginx, no replica restarts, and a second run changes nothing."""
    inventory = yml_inventory(serving_world, "site-live", provisioning={"reboot": "never"}, max_num_seqs=72)
    hosts = py_inventory(serving_world, "site-live-hosts", max_num_seqs=72)
    before, conf_before = host_state(serving_world), lb_conf(serving_world)
    run, load, serving = under_load(serving_world, hosts, lambda: site(inventory))
    assert run.returncode == 0, failures(run)
    check_kept_serving(load, serving)
    # The only drain is in the batched play's block: it never ran.
    assert "TASK [The host leaves the load balancer]" not in run.stdout, run.stdout[-3000:]
    # Every host ran the wide plays (not converged: its plan changed), none was batched.
    recap = dict(re.findall(r"^(rollout-\d)\s+: ok=\d+\s+changed=(\d+)", run.stdout, re.MULTILINE))
    assert set(recap) == {h.name for h in serving_world.gpu}, run.stdout[-3000:]
    assert {n: s["units"] for n, s in host_state(serving_world).items()} == {n: s["units"] for n, s in before.items()}
    assert lb_conf(serving_world) == conf_before

    again = site(inventory)
    assert again.returncode == 0, failures(again)
    recap = dict(re.findall(r"^(rollout-\d)\s+: ok=\d+\s+changed=(\d+)", again.stdout, re.MULTILINE))
    assert recap == {h.name: "0" for h in serving_world.gpu}, again.stdout[-3000:]
