"""``ms4fleet.fleet.preflight`` without a fleet: its options come from its documentation, it needs ssh only
for hosts reached over SSH and rsync only when the run stages weights. (tests/controller/test_preflight_sim.py
runs it before a real host; tests/packaging/test_clean_install.py runs the collection without the package.)"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ACTION = "ansible_collections.ms4fleet.fleet.plugins.action.preflight"


def test_options_are_the_documented_ones() -> None:
    action = importlib.import_module(ACTION)
    assert action.ActionModule.ARGUMENT_SPEC == {
        "hosts": {"type": "list", "elements": "str"},
        "weights": {"type": "bool", "default": False},
        "validate": {"type": "list", "elements": "str"},
    }


def _adhoc(tmp_path: Path, inventory: str, args: str, *programs: str) -> subprocess.CompletedProcess[str]:
    """``ansible localhost -m ms4fleet.fleet.preflight -a ARGS`` with only ``programs`` on PATH (and the venv)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name in programs:
        (bin_dir / name).symlink_to(str(shutil.which(name)))
    (tmp_path / "inventory.yml").write_text(inventory)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{BIN}", "ANSIBLE_FORCE_COLOR": "0"}
    argv = [str(BIN / "ansible"), "-i", str(tmp_path / "inventory.yml"), "localhost", "-m", "ms4fleet.fleet.preflight"]
    return subprocess.run([*argv, "-a", args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


SSH_HOST = "all:\n  hosts:\n    gpu-1:\n      ansible_host: 192.0.2.1\n"
LOCAL_HOST = "all:\n  hosts:\n    gpu-1:\n      ansible_connection: local\n"


def test_an_ssh_host_needs_ssh_and_weights_need_rsync(tmp_path: Path) -> None:
    no_ssh = _adhoc(tmp_path / "a", SSH_HOST, "weights=false", "rsync")
    assert no_ssh.returncode != 0
    assert (
        '"msg": "ms4fleet: controller: ssh not found on PATH (needed for the Ansible engine\'s SSH connections): '
        'install it with `apt-get install openssh-client`"'
    ) in no_ssh.stdout, no_ssh.stdout + no_ssh.stderr
    no_rsync = _adhoc(tmp_path / "b", LOCAL_HOST, "weights=true", "ssh")
    assert no_rsync.returncode != 0
    assert "ms4fleet: controller: rsync not found on PATH (needed for weights staging)" in no_rsync.stdout
    # A host that is the controller itself needs no ssh; a run without weights needs no rsync.
    local = _adhoc(tmp_path / "c", LOCAL_HOST, "weights=false")
    assert local.returncode == 0, local.stdout + local.stderr
    assert "SUCCESS" in local.stdout and '"name": "ansible-core"' in local.stdout
