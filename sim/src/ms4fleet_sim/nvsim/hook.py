"""``nvidia-container-runtime-hook prestart`` of the simulated toolkit: GPU memory accounting for containers.

Reads the OCI state (stdin) and the bundle's config.json, then, for a container that asks for GPUs:
fails like the real hook when no driver is loaded or a device is unknown; writes the visible GPUs
(``<rootfs>/run/nvidia-sim/gpus.json``, free memory counted before this container) and the fault switches
into the container; registers a vLLM server's memory (``--gpu-memory-utilization`` x total per GPU) in the
host registry. The contract is in docs/simulation.md.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ms4fleet_sim.nvsim import state


def _env(config: dict[str, Any]) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in config.get("process", {}).get("env", []) if "=" in item)
    return dict(pairs)


def _rootfs(config: dict[str, Any], bundle: Path) -> Path:
    root = Path(config.get("root", {}).get("path", "rootfs"))
    return root if root.is_absolute() else bundle / root


def _inside(rootfs: Path, relative: str) -> Path:
    """A path under the container's rootfs that cannot escape it through symlinks."""
    target = Path(os.path.realpath(rootfs / relative))
    if not target.is_relative_to(os.path.realpath(rootfs)):
        raise ValueError(f"{relative} escapes the container rootfs")
    return target


def is_vllm_server(args: list[str]) -> bool:
    """Only a vLLM server holds GPU memory in the simulation (a `vllm serve` process)."""
    return bool(args) and Path(args[0]).name == "vllm" and "serve" in args[1:2]


def prestart(oci_state: dict[str, Any]) -> int:
    bundle = Path(oci_state["bundle"])
    config = json.loads((bundle / "config.json").read_text(encoding="utf-8"))
    visible = _env(config).get("NVIDIA_VISIBLE_DEVICES")
    if visible is None or visible.strip() in ("", "none", "void"):
        return 0
    if state.loaded_module() is None:
        sys.stderr.write("nvidia-container-cli: initialization error: nvml error: driver not loaded\n")
        return 1
    prof = state.profile()
    try:
        selected = state.select_gpus(visible, prof)
    except ValueError:
        sys.stderr.write(f"nvidia-container-cli: device error: {visible}: unknown device\n")
        return 1
    container_id = str(oci_state["id"])
    views = state.gpu_views(selected, prof, exclude=container_id)
    run_dir = _inside(_rootfs(config, bundle), "run")
    sim_dir = run_dir / "nvidia-sim"
    sim_dir.mkdir(parents=True, exist_ok=True)
    state.write_json_atomic(sim_dir / "gpus.json", views)
    if state.FAULTS.exists():
        shutil.copyfile(state.FAULTS, sim_dir / "faults.json")
    args = [str(a) for a in config.get("process", {}).get("args", [])]
    if is_vllm_server(args):
        utilization = state.gpu_memory_utilization(args)
        total = int(prof["memory_total_bytes"])
        state.register(
            container_id,
            int(oci_state["pid"]),
            Path(args[0]).name,
            {int(v["host_index"]): int(utilization * total) for v in views},
            container_id=container_id,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["prestart"]:
        # poststart/poststop and other stages have nothing to do in the simulation.
        return 0
    return prestart(json.load(sys.stdin))
