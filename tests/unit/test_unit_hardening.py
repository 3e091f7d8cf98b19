"""The replica units' sandbox: the directives both runtimes get, the native unit's GPU device allow-list
against the device nodes of a real H200 host (tests/data/h200/dev-nvidia.txt, ``ls -la /dev/nvidia*``
and ``/proc/devices`` there), and the exposure ``systemd-analyze security`` gives the rendered units."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.config import HostConfig
from ms4fleet.serving import plan_host

ROOT = Path(__file__).resolve().parents[2]
H200_DEVICES = ROOT / "tests" / "data" / "h200" / "dev-nvidia.txt"
# The exposure ceilings of issue 17 (systemd-analyze security: 0 safe .. 10 unsafe).
DOCKER_MAX, NATIVE_MAX = 4.0, 2.5
SANDBOX = {
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
}


def host(runtime: str, count: int = 8, **sections: Any) -> HostConfig:
    data = {"ms4fleet_gpu": {"kind": "h200-sxm", "count": count}, "ms4fleet_runtime": {"kind": runtime}}
    data.update({f"ms4fleet_{k}": v for k, v in sections.items()})
    return HostConfig.from_host_data("gpu-1", data)


def directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("runtime", ["docker", "native"])
def test_both_runtimes_run_sandboxed(runtime: str) -> None:
    unit = directives(plan_host(host(runtime)).replicas[0].unit_text)
    for key, value in SANDBOX.items():
        assert unit.get(key) == [value], (runtime, key, unit.get(key))
    assert unit["SystemCallFilter"] == ["@system-service", "~@privileged"]
    families = unit["RestrictAddressFamilies"][0].split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families) and "AF_PACKET" not in families
    # The weights check runs outside the sandbox (it refreshes the root-only stamp), and only it.
    assert all(v.startswith("+") for v in unit.get("ExecStartPre", []) if "weights_verify" in v)


def test_docker_unit_has_no_devices_and_native_only_the_gpus() -> None:
    docker = directives(plan_host(host("docker")).replicas[0].unit_text)
    assert docker["PrivateDevices"] == ["yes"] and "DeviceAllow" not in docker
    native = directives(plan_host(host("native", count=4)).replicas[1].unit_text)
    assert native["DevicePolicy"] == ["closed"] and "PrivateDevices" not in native
    assert native["User"] == ["ms4fleet"]
    assert native["DeviceAllow"] == [
        "/dev/nvidia0 rw",
        "/dev/nvidia1 rw",
        "/dev/nvidia2 rw",
        "/dev/nvidia3 rw",
        "/dev/nvidiactl rw",
        "/dev/nvidia-modeset rw",
        "char-nvidia-uvm rw",
        "char-nvidia-caps r",
    ]


def _h200_nodes() -> tuple[list[tuple[str, int, str]], dict[int, set[str]]]:
    """The char device nodes of the H200 capture (path, major, permission bits) and /proc/devices' names."""
    nodes: list[tuple[str, int, str]] = []
    majors: dict[int, set[str]] = {}
    directory = "/dev"
    node = re.compile(r"^c([rwx-]{9})\s+\d+\s+\S+\s+\S+\s+(\d+),\s*(\d+)\s+\w+\s+\d+\s+[\d:]+\s+(\S+)$")
    for line in H200_DEVICES.read_text().splitlines():
        if line.endswith(":") and line.startswith("/dev/"):
            directory = line[:-1]
        elif match := node.match(line):
            name = match[4]
            path = name if name.startswith("/") else f"{directory}/{name}"
            nodes.append((path, int(match[2]), match[1]))
        elif parts := re.fullmatch(r"(\d+) (nvidia\S*)", line.strip()):
            majors.setdefault(int(parts[1]), set()).add(parts[2])
    return list(dict.fromkeys(nodes)), majors


def test_native_allow_list_covers_the_real_h200_device_nodes() -> None:
    nodes, majors = _h200_nodes()
    assert {p for p, _, _ in nodes} >= {
        "/dev/nvidia0",
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
        "/dev/nvidia-caps/nvidia-cap2",
    }
    allow = [
        entry.split() for entry in directives(plan_host(host("native", count=1)).replicas[0].unit_text)["DeviceAllow"]
    ]
    for path, major, bits in nodes:
        # The access the node's own mode grants anyone is what CUDA may use; the allow-list must grant it too.
        needed = {"r"} if "w" not in bits[6:] else {"r", "w"}
        granted = {
            ch
            for spec, mode in allow
            if spec == path or spec.removeprefix("char-") in majors.get(major, set())
            for ch in mode
        }
        assert needed <= granted, (path, major, needed, granted)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize(("runtime", "ceiling"), [("docker", DOCKER_MAX), ("native", NATIVE_MAX)])
def test_rendered_units_score_within_the_ceiling(tmp_path: Path, runtime: str, ceiling: float) -> None:
    config = host(runtime, serving={"api_key": {"file": "/etc/ms4fleet/api-key"}})
    path = tmp_path / "ms4fleet-vllm-0.service"
    path.write_text(plan_host(config).replicas[0].unit_text)
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(path)], capture_output=True, text=True, check=False
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    if match is None and "--offline" in done.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    assert match is not None, done.stdout + done.stderr
    print(f"{runtime} unit (offline): exposure {match[1]}")
    assert float(match[1]) <= ceiling
