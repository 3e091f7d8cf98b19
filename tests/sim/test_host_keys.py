"""A sim host whose SSH key is not in known_hosts is refused by pyinfra, by Ansible and by weights staging,
each naming the host; ``ms4fleet_ssh_accept_new: true`` trusts it on first use (and records the key).

The inventories are the fleet's own, pointed at an empty known_hosts file and without any host-key setting of
their own: what refuses the host is ms4fleet's default. This module brings up its own one-host fleet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ms4fleet.inventory import load_inventory
from ms4fleet.weights.stage import StageJob, stage_to_hosts, target_for

pytestmark = pytest.mark.sim

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.support.simhosts import running

    with running(tmp_path_factory.mktemp("hostkeys-sim"), name="hostkeys", specs=("h200x1",)) as sim:
        yield sim


def _pyinfra_inventory(sim: Any, tmp_path: Path, known_hosts: Path, accept_new: bool) -> Path:
    from ms4fleet_sim.inventories import render_pyinfra

    lines = [
        render_pyinfra(sim.record),
        f"sim[1]['ssh_known_hosts_file'] = {str(known_hosts)!r}",
        "del sim[1]['ssh_strict_host_key_checking']",
    ]
    if accept_new:
        lines.append("sim[1]['ms4fleet_ssh_accept_new'] = True")
    path = tmp_path / f"inventory-{accept_new}.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def _ansible_inventory(sim: Any, tmp_path: Path, known_hosts: Path, accept_new: bool) -> Path:
    from ms4fleet_sim.inventories import render_ansible

    doc = yaml.safe_load(render_ansible(sim.record))
    shared = doc["all"]["children"]["sim"]["vars"]
    shared["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={known_hosts}"
    if accept_new:
        shared["ms4fleet_ssh_accept_new"] = True
    path = tmp_path / f"inventory-{accept_new}.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "ANSIBLE_CACHE_PLUGIN": "memory"}
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False, env=env)


def test_pyinfra_refuses_an_unknown_host_key_unless_the_inventory_accepts_new(fleet: Any, tmp_path: Path) -> None:
    (name,) = fleet.hosts
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    argv = [sys.executable, "-m", "pyinfra", "-y", "--parallel", "1"]
    refused = _run(
        [*argv, str(_pyinfra_inventory(fleet, tmp_path, known_hosts, False)), "exec", "--", "true"], tmp_path
    )
    assert refused.returncode != 0
    said = [line for line in (refused.stdout + refused.stderr).splitlines() if name in line and "known_hosts" in line]
    assert said, refused.stdout + refused.stderr
    assert known_hosts.read_text() == ""

    accepted = _run(
        [*argv, str(_pyinfra_inventory(fleet, tmp_path, known_hosts, True)), "exec", "--", "true"], tmp_path
    )
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "ssh-ed25519" in known_hosts.read_text()


PLAYBOOK = f"""
- name: As the preflight play does
  hosts: all
  gather_facts: false
  tasks:
    - name: Check host keys as the core decides
      ansible.builtin.import_tasks: {ROOT}/playbooks/tasks/host_keys.yml
- name: Connect
  hosts: all
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""


def test_ansible_refuses_an_unknown_host_key_unless_the_inventory_accepts_new(fleet: Any, tmp_path: Path) -> None:
    (name,) = fleet.hosts
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    playbook = tmp_path / "ping.yml"
    playbook.write_text(PLAYBOOK)
    ansible = [str(Path(sys.executable).with_name("ansible-playbook")), str(playbook), "-i"]
    refused = _run([*ansible, str(_ansible_inventory(fleet, tmp_path, known_hosts, False))], tmp_path)
    assert refused.returncode != 0
    said = [line for line in refused.stdout.splitlines() if name in line and "UNREACHABLE" in line]
    assert said and "Host key verification failed" in refused.stdout, refused.stdout + refused.stderr
    assert known_hosts.read_text() == ""

    accepted = _run([*ansible, str(_ansible_inventory(fleet, tmp_path, known_hosts, True))], tmp_path)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "ssh-ed25519" in known_hosts.read_text()


def test_staging_refuses_an_unknown_host_key_unless_the_inventory_accepts_new(fleet: Any, tmp_path: Path) -> None:
    from ms4fleet_sim.weights_mirror import build_tree

    staged = build_tree(tmp_path / "mirror")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")

    def stage(accept_new: bool) -> Any:
        (spec,) = load_inventory(_pyinfra_inventory(fleet, tmp_path, known_hosts, accept_new)).hosts
        target = target_for(spec.name, spec.connection, spec.data)
        (outcome,) = stage_to_hosts(staged, [StageJob(target, "/srv/ms4fleet/models/hostkeys")], timeout=120)
        return outcome

    refused = stage(False)
    assert (refused.host, refused.status) == (next(iter(fleet.hosts)), "failed")
    assert "Host key verification failed" in refused.detail and "\n" not in refused.detail
    assert known_hosts.read_text() == ""

    accepted = stage(True)
    assert accepted.status == "staged", accepted.detail
    assert "ssh-ed25519" in known_hosts.read_text()
