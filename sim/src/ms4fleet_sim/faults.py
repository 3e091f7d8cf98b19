"""Fault switches of a sim host (``/etc/nvidia-sim/faults.json``), read by the vLLM stand-in.

The hook copies the file into each GPU container at start, so a switch applies to containers started
after it is set. Switch names and meanings belong to the stand-in (see docs/simulation.md).
"""

from __future__ import annotations

import json
from typing import Any

from ms4fleet_sim import dockercli

FAULTS_PATH = "/etc/nvidia-sim/faults.json"


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["health_503=true", "slow_start_s=30"]`` -> ``{"health_503": True, "slow_start_s": 30}``."""
    switches: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. health_503=true")
        try:
            switches[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            switches[key.strip()] = raw
    return switches


def write(container: str, switches: dict[str, Any]) -> None:
    """Replace the host's switches (an empty mapping removes the file)."""
    if not switches:
        dockercli.exec_in(container, ["rm", "-f", FAULTS_PATH])
        return
    payload = (json.dumps(switches, indent=2) + "\n").encode()
    dockercli.exec_in(
        container, ["sh", "-c", f"cat > {FAULTS_PATH}.tmp && mv {FAULTS_PATH}.tmp {FAULTS_PATH}"], input_bytes=payload
    )


def read(container: str) -> dict[str, Any]:
    proc = dockercli.exec_in(container, ["cat", FAULTS_PATH], check=False)
    if proc.returncode != 0:
        return {}
    data: dict[str, Any] = json.loads(proc.stdout)
    return data
