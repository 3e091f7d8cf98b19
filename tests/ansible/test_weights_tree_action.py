"""``ms4fleet.fleet.weights_tree`` in a play: hosts with ``weights.peers`` (here local ones, each with its own
directory) take the revision from a loopback mirror through the core's tree, and each verifies it."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from ms4fleet.hostside import weights_verify as hv
from ms4fleet_sim import weights_mirror

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_play_hosts_are_staged_through_the_tree(tmp_path: Path) -> None:
    tree = weights_mirror.build_tree(tmp_path / "mirror")
    mirror = weights_mirror.serve(tmp_path / "mirror")
    manifest = tree / ".ms4fleet" / "manifest.json"
    weights = {
        "source": "mirror",
        "mirror_url": mirror.url,
        "allow_insecure": True,
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "revision": weights_mirror.SIM_REVISION,
        "peers": True,
        "peer_fanout": 1,
        "peer_address": "127.0.0.1",
    }
    hosts = {
        name: {
            "ansible_connection": "local",
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 1},
            "ms4fleet_weights": {**weights, "dir": str(tmp_path / name), "peer_port": free_port()},
        }
        for name in ("gpu-1", "gpu-2", "gpu-3")
    }
    hosts["gpu-3"]["ms4fleet_weights"].pop("peers")  # left to the per-host weights action
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    play = [
        {
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "peer staging",
                    "ms4fleet.fleet.weights_tree": {"hosts": "{{ ansible_play_hosts }}"},
                    "run_once": True,
                    "register": "staged",
                },
                {"ansible.builtin.debug": {"msg": "{{ staged | to_json }}"}, "run_once": True},
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_STDOUT_CALLBACK": "json"}
    argv = [str(BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml")]
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        mirror.close()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The progress lines come first (Display), then the json callback's document.
    lines = done.stdout.splitlines()
    assert any(line.startswith("peer staging to 2 host(s): ") for line in lines)
    document = json.loads("\n".join(lines[lines.index("{") :]))
    result = document["plays"][0]["tasks"][0]["hosts"]["gpu-1"]
    assert result["changed"] is True and result["hosts"] == ["gpu-1", "gpu-2"]
    assert result["lines"][:2] == [
        f"gpu-1: staged: verified on host via source ({result['lines'][0].split('(')[1]}",
        f"gpu-2: staged: verified on host via gpu-1 ({result['lines'][1].split('(')[1]}",
    ]
    assert result["lines"][2].startswith("tree: 1 seed(s), depth 2; the source sent")
    for name in ("gpu-1", "gpu-2"):
        dest = next((tmp_path / name).glob("*/*"))
        assert hv.verify(str(dest), full=True)["ok"]
    assert not (tmp_path / "gpu-3").exists()
