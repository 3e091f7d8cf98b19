"""Issue 16: a daemon.json change on a serving host restarts no replica. Keys dockerd reloads on SIGHUP
(``ms4fleet.provision.DOCKER_RELOADABLE``) are a ``live`` change: ``pyinfra deploy.py`` writes the file and
reloads dockerd, so the replica's container, its unit and dockerd itself keep running while clients are
served through the host's proxy (nginx), one request every 0.2 s.

The Docker host of test_sim_rollout_digest.py (its fixture, a fleet of its own), deployed once, then the
inventory's ``docker_daemon_options`` changed and deployed again under load; then changed once more and
applied with ``ansible-playbook playbooks/site.yml`` (the docker role's handler reloads dockerd alike).
"""

from __future__ import annotations

import base64
import json
import runpy
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.inventory import load_inventory
from ms4fleet.provision import DAEMON_JSON
from ms4fleet.serving import plan_host
from ms4fleet_sim import standin_image
from ms4fleet_sim.inventories import group_data, py_literal
from tests.rollout.test_sim_rollout_deploy import PYINFRA, ROOT, site
from tests.rollout.test_sim_rollout_digest import DockerWorld, docker_world  # noqa: F401 (the fixture)
from tests.support.simhosts import NVIDIA_SOURCES, SimHost

pytestmark = [pytest.mark.sim, pytest.mark.slow]

CODES = "/tmp/daemon-json-codes"
LOAD = "/tmp/daemon-json-load.sh"
CHAT = '{"model":"mistral-small-4","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'


def _inventory(world: DockerWorld, name: str, options: dict[str, Any]) -> Path:
    hosts, shared = runpy.run_path(str(world.inventory()))["gpus"]
    provision = {
        "nvidia_apt_repo": group_data(world.sim.record)["ms4fleet_provision"]["nvidia_apt_repo"],
        "docker_daemon_options": options,
    }
    out = world.root / f"{name}.py"
    out.write_text(f"gpus = {py_literal((hosts, {**shared, 'ms4fleet_provision': provision}))}\n", encoding="utf-8")
    return out


def deploy(inventory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PYINFRA), "-y", str(inventory), str(ROOT / "deploy.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip


def _load_script(port: int) -> str:
    request = (
        f"curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 20 -H 'content-type: application/json'"
        f" -d '{CHAT}' http://127.0.0.1:{port}/v1/chat/completions"
    )
    return f"while [ ! -e {CODES}.stop ]; do {request} >> {CODES}; sleep 0.2; done\n"


def _state(host: SimHost, units: list[str], containers: list[str]) -> dict[str, str]:
    """What a restart would change: dockerd's pid, each unit's NRestarts and main pid, each container's id and
    start time."""
    state = {"dockerd": host.sudo("systemctl show -p MainPID --value docker").stdout.strip()}
    for unit in units:
        state[unit] = host.sudo(f"systemctl show -p NRestarts -p MainPID -p ActiveEnterTimestamp {unit}").stdout
    for name in containers:
        state[name] = host.sudo(f"docker inspect --format '{{{{.Id}}}} {{{{.State.StartedAt}}}}' {name}").stdout
    return state


def test_a_reloadable_daemon_json_change_restarts_nothing_under_load(docker_world: DockerWorld) -> None:  # noqa: F811
    world, host = docker_world, docker_world.host
    # The harness's own apt source names the repository the deploy names under ms4fleet's pinned key.
    host.sudo(f"rm -f {NVIDIA_SOURCES}")
    # The inventory's tag, which the host pulls through the fleet's registry.
    world.push(standin_image.ensure_image())
    first_inventory = _inventory(world, "daemon-a", {})
    started = time.monotonic()
    first = deploy(first_inventory)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    print(f"first deploy: {time.monotonic() - started:.0f} s")
    replicas = plan_host(next(iter(load_inventory(first_inventory))).config).replicas
    units = [r.unit_name for r in replicas]
    containers = [r.container_name for r in replicas]
    before = _state(host, units, containers)

    options = {"debug": True, "labels": ["ms4fleet.test=live"]}
    second_inventory = _inventory(world, "daemon-b", options)
    codes, second = _under_load(host, replicas[0].port, lambda: deploy(second_inventory))
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    _check(host, codes, "ms4fleet.test=live")
    assert _state(host, units, containers) == before


def test_site_yml_reloads_dockerd_alike(docker_world: DockerWorld) -> None:  # noqa: F811
    world, host = docker_world, docker_world.host
    path = world.ansible_inventory()
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["all"]["children"]["ms4fleet_gpu"]["vars"]["ms4fleet_provision"] = {
        "nvidia_apt_repo": group_data(world.sim.record)["ms4fleet_provision"]["nvidia_apt_repo"],
        "docker_daemon_options": {"debug": True, "labels": ["ms4fleet.test=ansible"]},
    }
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    replicas = plan_host(next(iter(load_inventory(world.inventory()))).config).replicas
    units = [r.unit_name for r in replicas]
    containers = [r.container_name for r in replicas]
    before = _state(host, units, containers)
    codes, run = _under_load(host, replicas[0].port, lambda: site(path))
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    _check(host, codes, "ms4fleet.test=ansible")
    assert _state(host, units, containers) == before


def _under_load(host: SimHost, port: int, change: Any) -> tuple[list[str], Any]:
    """``change()`` while a client on the host sends a request through its proxy every 0.2 s: each status."""
    host.sudo(f"rm -f {CODES} {CODES}.stop")
    encoded = base64.b64encode(_load_script(port).encode()).decode()
    host.sudo(f"echo {encoded} | base64 -d > {LOAD}; nohup sh {LOAD} >/dev/null 2>&1 &")
    time.sleep(3)
    started = time.monotonic()
    result = change()
    print(f"change applied in {time.monotonic() - started:.0f} s")
    time.sleep(3)
    host.sudo(f"touch {CODES}.stop; sleep 1")
    return host.sudo(f"cat {CODES}").stdout.split(), result


def _check(host: SimHost, codes: list[str], label: str) -> None:
    """Every request answered, and dockerd runs with the new keys."""
    print(f"{len(codes)} requests through the host proxy during the change")
    assert len(codes) >= 20, codes
    assert set(codes) == {"200"}, codes
    written = json.loads(host.sudo(f"cat {DAEMON_JSON}").stdout)
    assert written["debug"] is True and written["labels"] == [label], written
    info = json.loads(host.sudo("docker info --format '{{json .}}'").stdout)
    assert info["Debug"] is True and label in info["Labels"], (info["Debug"], info["Labels"])
