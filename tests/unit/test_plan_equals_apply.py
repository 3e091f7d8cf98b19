"""plan == apply: ``ms4fleet plan --json`` reads an inventory exactly as the engine that applies it does.

The fixtures under tests/data/inventories set the same ms4fleet_* keys at several levels (the inventory's own
group and host data, pyinfra's group_data/, Ansible's group_vars/ and host_vars/, a host in two groups); each
engine's own CLI is the reference: ``pyinfra INVENTORY debug-inventory`` and ``ansible-inventory --host``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "inventories"
BIN = Path(sys.executable).parent
HOSTS = ["gpu-h100-01", "gpu-h100-02", "gpu-h200-01"]


def _plan(inventory: Path) -> dict[str, dict[str, Any]]:
    done = subprocess.run(
        [BIN / "ms4fleet", "plan", inventory.name, "--json"],
        cwd=inventory.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return {h["host"]: h for h in json.loads(done.stdout)["hosts"]}


def _ms4fleet_keys(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k.startswith("ms4fleet_")}


def _pyinfra_debug_inventory(inventory: Path) -> dict[str, dict[str, Any]]:
    """``pyinfra INVENTORY debug-inventory``: a ``[host]`` line, then the host's data as JSON."""
    done = subprocess.run(
        [BIN / "pyinfra", inventory.name, "debug-inventory"],
        cwd=inventory.parent,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    # pyinfra writes its report to stderr.
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    hosts: dict[str, dict[str, Any]] = {}
    for block in re.split(r"^\[(\S+)\] *$", text, flags=re.M)[1:]:
        if block in HOSTS:
            name = block
            continue
        body = block[block.index("{") : block.rindex("}") + 1]
        hosts[name] = json.loads(body)
    return hosts


def _ansible_inventory_host(inventory: Path, host: str) -> dict[str, Any]:
    done = subprocess.run(
        [BIN / "ansible-inventory", "-i", inventory.name, "--host", host],
        cwd=inventory.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout))


def test_pyinfra_inventory_plan_equals_debug_inventory() -> None:
    inventory = DATA / "pyinfra" / "fleet.py"
    plan = _plan(inventory)
    theirs = _pyinfra_debug_inventory(inventory)
    assert sorted(plan) == sorted(theirs) == sorted(HOSTS)
    for host in HOSTS:
        assert plan[host]["settings"] == _ms4fleet_keys(theirs[host]), host
    # The conflicts resolved pyinfra's way: group_data/ beats the inventory's own group data, the host beats
    # its groups (and settles a tie between two of them).
    assert plan["gpu-h100-01"]["plan"]["serving"]["max_model_len"] == 131072
    assert plan["gpu-h100-02"]["settings"]["ms4fleet_serving"] == {"max_num_seqs": 8}
    assert "--max-num-seqs" in (argv := plan["gpu-h100-02"]["plan"]["replicas"][0]["argv"])
    assert argv[argv.index("--max-num-seqs") + 1] == "8"
    assert plan["gpu-h200-01"]["settings"]["ms4fleet_runtime"]["image"] == "vllm/vllm-openai:v0.31.0"


def test_ansible_inventory_plan_equals_ansible_inventory_host() -> None:
    inventory = DATA / "ansible" / "fleet.yml"
    plan = _plan(inventory)
    assert sorted(plan) == sorted(HOSTS)
    for host in HOSTS:
        assert plan[host]["settings"] == _ms4fleet_keys(_ansible_inventory_host(inventory, host)), host
    # Ansible's precedence: host_vars/ beat the inline host, group_vars/ beat the inline group vars.
    assert plan["gpu-h100-01"]["plan"]["serving"]["max_model_len"] == 131072
    assert plan["gpu-h100-02"]["settings"]["ms4fleet_serving"] == {"max_num_seqs": 4}
    assert plan["gpu-h200-01"]["settings"]["ms4fleet_runtime"]["image"] == "vllm/vllm-openai:v0.31.0"
