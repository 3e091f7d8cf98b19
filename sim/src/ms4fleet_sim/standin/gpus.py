"""Where the stand-in finds its GPUs and fault switches, per docs/simulation.md.

* In a container started with ``--gpus``: the simulated runtime hook wrote ``/run/nvidia-sim/gpus.json``
  and copied ``faults.json`` next to it; it also registered the container's memory, so the stand-in
  registers nothing.
* Natively on a sim host (``/run/nvidia-sim`` exists, no ``gpus.json``): the host's ``nvsim.state``
  module lists the GPUs for ``CUDA_VISIBLE_DEVICES``; the stand-in registers its own memory use and reads
  faults from ``/etc/nvidia-sim/faults.json``.
* Anywhere else there is no GPU, and vLLM fails to pick a device.

Environment overrides (tests): ``MS4FLEET_SIM_GPUS_FILE``, ``MS4FLEET_SIM_FAULTS_FILE``,
``MS4FLEET_SIM_RUN_DIR``, ``MS4FLEET_SIM_NVSIM_PATH`` (the directory holding ``ms4fleet_sim/nvsim``).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .cli import StartupError

RUN_DIR = Path("/run/nvidia-sim")
NVSIM_PATH = "/usr/lib/nvidia-sim"
REGISTRY_NAME = "vllm"


@dataclass
class GpuSource:
    """The GPUs this process sees, where its faults live, and how to declare its memory use."""

    gpus: list[dict[str, Any]]
    faults_file: Path
    state: ModuleType | None = None
    entry_id: str | None = None

    def register(self, pid: int, bytes_per_gpu: int, ranks: int) -> None:
        """Declare memory use (native runs only; the container hook registers containers)."""
        if self.state is None:
            return
        self.entry_id = f"native-{pid}"
        used = {int(g["host_index"]): bytes_per_gpu for g in self.gpus[:ranks]}
        self.state.register(self.entry_id, pid, REGISTRY_NAME, used)

    def unregister(self) -> None:
        if self.state is not None and self.entry_id is not None:
            self.state.unregister(self.entry_id)
            self.entry_id = None


def _nvsim_state(env: Mapping[str, str]) -> ModuleType:
    path = env.get("MS4FLEET_SIM_NVSIM_PATH", NVSIM_PATH)
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("ms4fleet_sim.nvsim.state")


def discover(env: Mapping[str, str]) -> GpuSource:
    """The GPU source for this process; vLLM's device-inference failure when there is none."""
    run_dir = Path(env.get("MS4FLEET_SIM_RUN_DIR", str(RUN_DIR)))
    gpus_file = Path(env.get("MS4FLEET_SIM_GPUS_FILE", str(run_dir / "gpus.json")))
    source: GpuSource | None = None
    if gpus_file.is_file():
        gpus: list[dict[str, Any]] = json.loads(gpus_file.read_text(encoding="utf-8"))
        faults = Path(env.get("MS4FLEET_SIM_FAULTS_FILE", str(gpus_file.with_name("faults.json"))))
        source = GpuSource(gpus=gpus, faults_file=faults)
    elif run_dir.is_dir():
        state = _nvsim_state(env)
        views = state.visible_gpus(env.get("CUDA_VISIBLE_DEVICES"))
        faults = Path(env.get("MS4FLEET_SIM_FAULTS_FILE", str(state.FAULTS)))
        source = GpuSource(gpus=[dict(v) for v in views], faults_file=faults, state=state)
    if source is None or not source.gpus:
        # What vLLM says when no CUDA device can be found (vllm/config/device.py).
        raise StartupError(
            "RuntimeError",
            "Failed to infer device type, please set the environment variable "
            "`VLLM_LOGGING_LEVEL=DEBUG` to turn on verbose logging to help debug the issue.",
        )
    return source
