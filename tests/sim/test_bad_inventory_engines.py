"""Ten bad inventories through BOTH engines against a 1-host sim fleet (``badinv``): ``pyinfra -y INVENTORY
deploy.py`` and ``ansible-playbook -i INVENTORY playbooks/site.yml`` each exit non-zero with one clear line
naming the host and field (or the file), and the host is left exactly as it was: its packages, apt, systemd,
Docker and ms4fleet configuration, users and home directories, read through Docker before and after. pyinfra
must not even connect: the host's sshd logs no accepted login during its runs.

The cases are built from the fleet's own good inventories (the ones `ms4fleet sim up` writes), with one
mistake each; the good inventories themselves are not run here (tests/pyinfra and tests/ansible do that).
"""

from __future__ import annotations

import copy
import os
import runpy
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ms4fleet_sim import inventories
from tests.ansible import simrun
from tests.pyinfra import simfleet

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "badinv"
UNSET = "MS4FLEET_BADINV_UNSET_KEY"
# What a run that touched the host would have changed; sorted listings with sizes and mtimes, and hashes.
SNAPSHOT = (
    "md5sum /var/lib/dpkg/status /etc/passwd /etc/group; "
    "find /etc/apt /etc/systemd/system /etc/docker /etc/ms4fleet /etc/modprobe.d /srv /var/lib/ms4fleet /home /root "
    "-xdev -printf '%p %s %T@ %m\\n' 2>/dev/null | sort | md5sum"
)
# sshd's record of logins: pyinfra must validate before it connects at all.
SSH_LOGINS = "journalctl -q --no-pager -u ssh -u sshd 2>/dev/null | grep -c 'Accepted' || true"
SSH_STARTED = "journalctl -q --no-pager -u ssh -u sshd 2>/dev/null | grep -c 'Server listening' || true"


@dataclass(frozen=True)
class Case:
    name: str
    # mutate(hosts, shared) for the pyinfra literal and for the Ansible group (same keys but connection)
    mutate: Callable[[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]], None]
    expect: str  # a part of the one error line, the same for both engines


def _host(hosts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return next(iter(hosts.values()))


def _rename(hosts: dict[str, dict[str, Any]], new: str) -> None:
    old = next(iter(hosts))
    hosts[new] = hosts.pop(old)


def _extra_group(extra: dict[str, Any], hosts: dict[str, dict[str, Any]], data: dict[str, Any]) -> None:
    extra["canary"] = (list(hosts), data)


CASES = [
    Case(
        "unknown-key", lambda h, s, e: _host(h).update(ms4fleet_servng={}), "ms4fleet_servng is not an ms4fleet setting"
    ),
    Case("missing-weights", lambda h, s, e: s.pop("ms4fleet_weights"), "weights is missing"),
    Case(
        "bad-gpu-kind",
        lambda h, s, e: _host(h).update(ms4fleet_gpu={"kind": "h300-sxm", "count": 8}),
        "gpu.kind='h300-sxm'",
    ),
    Case(
        "unset-secret-env",
        lambda h, s, e: s.update(ms4fleet_serving={"api_key": {"env": UNSET}}),
        f"serving.api_key.env names {UNSET}, which is unset",
    ),
    Case(
        "group-conflict",
        lambda h, s, e: (
            _extra_group(e, h, {"ms4fleet_serving": {"max_num_seqs": 8}})
            or s.update(ms4fleet_serving={"max_num_seqs": 64})
        ),
        "ms4fleet_serving is set differently by groups 'canary' and 'sim'",
    ),
    Case(
        "unpinned-image",
        lambda h, s, e: s.update(ms4fleet_runtime={"kind": "docker", "image": "vllm/vllm-openai:latest"}),
        "runtime.image='vllm/vllm-openai:latest' is not pinned",
    ),
    Case("lookalike-host-name", lambda h, s, e: _rename(h, "gpu-\u0430"), "name holds U+0430 CYRILLIC SMALL LETTER A"),
    Case(
        "tp-not-dividing",
        lambda h, s, e: s.update(ms4fleet_serving={"tensor_parallel_size": 3}),
        "serving.tensor_parallel_size=3 does not divide",
    ),
    Case(
        "driver-off-branch",
        lambda h, s, e: s.update(ms4fleet_provision={**s["ms4fleet_provision"], "driver_version": "570.172.08"}),
        "provision.driver_version='570.172.08' is not on driver_branch 580",
    ),
    Case(
        "host-twice-by-case",
        lambda h, s, e: h.update({next(iter(h)).upper(): copy.deepcopy(_host(h))}),
        "name is host",
    ),
]


@dataclass(frozen=True)
class World:
    fleet: simfleet.Fleet
    host: str
    py_hosts: dict[str, dict[str, Any]]
    py_shared: dict[str, Any]
    yml: dict[str, Any]

    def snapshot(self) -> str:
        return self.fleet.sh(self.host, SNAPSHOT)

    def logins(self) -> int:
        return int(self.fleet.sh(self.host, SSH_LOGINS, check=False).strip() or 0)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    fleet = simfleet.ensure_fleet(FLEET, 1)
    try:
        (hosts, shared) = runpy.run_path(str(fleet.inventory))[inventories.GROUP]
        _, yml_path = inventories.paths(fleet.target)
        # The login count below means something only if sshd's journal is there to read.
        assert int(fleet.sh(fleet.hosts[0], SSH_STARTED, check=False).strip() or 0) >= 1
        yield World(fleet, fleet.hosts[0], dict(hosts), shared, yaml.safe_load(yml_path.read_text()))
    finally:
        fleet.down()


def _pyinfra_inventory(world: World, case: Case, where: Path) -> Path:
    hosts, shared, extra = copy.deepcopy(world.py_hosts), copy.deepcopy(world.py_shared), {}
    case.mutate(hosts, shared, extra)
    groups = {inventories.GROUP: (list(hosts.items()), shared)}
    groups.update({name: (members, data) for name, (members, data) in extra.items()})
    body = "".join(f"{name} = {value!r}\n" for name, value in groups.items())
    path = where / "inventory.py"
    path.write_text(body, encoding="utf-8")
    return path


def _ansible_inventory(world: World, case: Case, where: Path) -> Path:
    doc = copy.deepcopy(world.yml)
    group = doc["all"]["children"][inventories.GROUP]
    extra: dict[str, Any] = {}
    case.mutate(group["hosts"], group["vars"], extra)
    for name, (members, data) in extra.items():
        doc["all"]["children"][name] = {"hosts": {m: {} for m in members}, "vars": data}
    path = where / "inventory.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _error_lines(output: str, expect: str) -> list[str]:
    return [line for line in output.splitlines() if expect in line]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_inventory_stops_both_engines_before_the_host_changes(world: World, case: Case, tmp_path: Path) -> None:
    os.environ.pop(UNSET, None)
    before, logins = world.snapshot(), world.logins()

    inventory = _pyinfra_inventory(world, case, tmp_path)
    argv = [str(simfleet.PYINFRA), "-y", str(inventory), str(simfleet.ROOT / "deploy.py")]
    done = subprocess.run(argv, cwd=simfleet.ROOT, capture_output=True, text=True, check=False, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    lines = _error_lines(output, case.expect)
    assert len(lines) == 1 and lines[0].startswith("ms4fleet: error: "), output[-3000:]
    assert "Traceback" not in output
    assert "Connecting to hosts" not in output  # stopped before pyinfra's connect stage
    assert world.logins() == logins, "pyinfra connected to the host"
    assert world.snapshot() == before

    run = simrun.playbook(_ansible_inventory(world, case, tmp_path), "site.yml")
    assert run.rc != 0, run.output[-3000:]
    lines = _error_lines(run.output, case.expect)
    assert len(lines) == 1 and '"msg": "ms4fleet: ' in lines[0], run.output[-3000:]
    assert "Traceback" not in run.output
    # The preflight is the first play's one task: nothing else ran on any host.
    assert all(row["ok"] == 0 and row["changed"] == 0 for row in run.recap().values()), run.recap()
    assert world.snapshot() == before
