"""``ms4fleet.fleet.converged`` without a fleet: its options come from its documentation, and a host that is
not what the core plans (this controller) is reported not converged, never failed and never changed.
(tests/ansible/test_site_sim.py and Molecule's site scenario run it on sim hosts.)"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ACTION = "ansible_collections.ms4fleet.fleet.plugins.action.converged"
INVENTORY = """all:
  hosts:
    gpu-1:
      ansible_connection: local
      ansible_python_interpreter: {python}
      ms4fleet_gpu: {{kind: h200-sxm, count: 2}}
"""


def test_options_are_the_documented_ones() -> None:
    action = importlib.import_module(ACTION)
    assert action.ActionModule.ARGUMENT_SPEC == {"quick": {"type": "bool", "default": True}}


def _adhoc(tmp_path: Path, inventory: str) -> dict[str, object]:
    (tmp_path / "inventory.yml").write_text(inventory)
    env = {
        **os.environ,
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "MS4FLEET_CACHE_DIR": str(tmp_path / "verdicts"),
    }
    argv = [str(BIN / "ansible"), "-i", str(tmp_path / "inventory.yml"), "gpu-1", "-m", "ms4fleet.fleet.converged"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, object] = json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"]["gpu-1"]
    return result


def test_a_host_not_as_planned_is_not_converged(tmp_path: Path) -> None:
    result = _adhoc(tmp_path, INVENTORY.format(python=sys.executable))
    assert result["converged"] is False and result["changed"] is False and not result.get("failed")
    assert result["differences"], result
    assert not (tmp_path / "verdicts").exists() or not any((tmp_path / "verdicts").iterdir())


def test_a_config_the_core_rejects_runs_the_roles_instead(tmp_path: Path) -> None:
    inventory = INVENTORY.format(python=sys.executable).replace("count: 2", "count: -3")
    result = _adhoc(tmp_path, inventory)
    assert result["converged"] is False and not result.get("failed")
    differences = result["differences"]
    assert isinstance(differences, list) and differences[0].startswith("not checked: gpu-1"), differences
