"""Eleven bad inventories built from a sim fleet's good ones (the inventories `ms4fleet sim up` writes), one
mistake each, for both engines: the same cases run against a live sim host (tests/sim/
test_bad_inventory_engines.py, which also compares the host before and after) and against a closed port
without Docker (tests/unit/test_bad_inventory_engines_offline.py).

+ ``CASES``: ``Case(name, mutate, expect)``; ``expect`` is a part of the one error line, the same for both engines.
+ ``pyinfra_inventory(py_text, case, where)`` / ``ansible_inventory(yml_text, case, where)``: the good inventory
  of a fleet with the case's mistake, written to ``where``.
+ ``run_pyinfra(inventory)`` / ``run_ansible(inventory)``: each engine as a user runs it, from the repository.
+ ``error_lines(output, expect)``, ``ansible_failed_once(output, expect)``: the error as each engine shows it.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ms4fleet_sim import inventories
from tests.ansible import simrun

ROOT = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).with_name("pyinfra")
UNSET = "MS4FLEET_BADINV_UNSET_KEY"

Hosts = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Case:
    name: str
    # mutate(hosts, shared, extra groups) on the pyinfra literal and on the Ansible group alike
    mutate: Callable[[Hosts, dict[str, Any], dict[str, Any]], None]
    expect: str


def _host(hosts: Hosts) -> dict[str, Any]:
    return next(iter(hosts.values()))


def _rename(hosts: Hosts, new: str) -> None:
    hosts[new] = hosts.pop(next(iter(hosts)))


def _twice_by_case(hosts: Hosts) -> None:
    name = next(iter(hosts))
    hosts[name.upper()] = copy.deepcopy(hosts[name])


def _tie(hosts: Hosts, shared: dict[str, Any], extra: dict[str, Any]) -> None:
    shared["ms4fleet_serving"] = {"max_num_seqs": 64}
    extra["canary"] = (list(hosts), {"ms4fleet_serving": {"max_num_seqs": 8}})


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
    Case("group-tie", _tie, "ms4fleet_serving is set differently by groups 'canary' and 'sim'"),
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
    Case("host-twice-by-case", lambda h, s, e: _twice_by_case(h), "written another way"),
    Case(
        "open-and-keyed",
        lambda h, s, e: s.update(ms4fleet_serving={"open_endpoint": True, "api_key": {"file": "/etc/ms4fleet/key"}}),
        "serving sets open_endpoint: true and an api_key",
    ),
]


def pyinfra_inventory(py_text: str, case: Case, where: Path) -> Path:
    namespace: dict[str, Any] = {}
    exec(compile(py_text, "inventory.py", "exec"), namespace)  # the fleet's own generated literal
    hosts_list, shared = copy.deepcopy(namespace[inventories.GROUP])
    hosts, extra = dict(hosts_list), {}
    case.mutate(hosts, shared, extra)
    groups = {inventories.GROUP: (list(hosts.items()), shared), **extra}
    path = where / "inventory.py"
    path.write_text("".join(f"{name} = {value!r}\n" for name, value in groups.items()), encoding="utf-8")
    return path


def ansible_inventory(yml_text: str, case: Case, where: Path) -> Path:
    doc = yaml.safe_load(yml_text)
    group = doc["all"]["children"][inventories.GROUP]
    extra: dict[str, Any] = {}
    case.mutate(group["hosts"], group["vars"], extra)
    for name, (members, data) in extra.items():
        doc["all"]["children"][name] = {"hosts": {m: {} for m in members}, "vars": data}
    path = where / "inventory.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != UNSET}


def run_pyinfra(inventory: Path) -> subprocess.CompletedProcess[str]:
    argv = [str(PYINFRA), "-y", str(inventory), str(ROOT / "deploy.py")]
    return subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, check=False, timeout=300)


def run_ansible(inventory: Path) -> simrun.Run:
    return simrun.playbook(inventory, "site.yml", env={UNSET: ""})


def error_lines(output: str, expect: str) -> list[str]:
    return [line for line in output.splitlines() if expect in line]


def ansible_failed_once(output: str, expect: str) -> bool:
    """The preflight task failed with the core's one line: Ansible shows it in the task's result and again
    as its own ``[ERROR]: Task failed:`` line, and nowhere else."""
    lines = error_lines(output, expect)
    results = [line for line in lines if line.startswith("fatal: ") and '"msg": "ms4fleet: ' in line]
    echoes = [line for line in lines if line.startswith("[ERROR]: Task failed: ms4fleet: ")]
    return len(results) == 1 and len(echoes) <= 1 and len(lines) == len(results) + len(echoes)
