"""State of a sim host's simulated GPUs: the profile, the loaded driver module and the memory registry.

The file formats are documented in docs/simulation.md; the vLLM stand-in codes against them.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, TypedDict

PROFILE = Path("/etc/nvidia-sim/profile.json")
FAULTS = Path("/etc/nvidia-sim/faults.json")
MODULE_ON_DISK = Path("/usr/lib/nvidia-sim/kernel-module.json")
RUN_DIR = Path("/run/nvidia-sim")
MODULE_LOADED = RUN_DIR / "module.json"
PROCS_DIR = RUN_DIR / "procs"

# vLLM 0.32's default for --gpu-memory-utilization (vllm/config/cache.py).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92


class GpuView(TypedDict):
    """One GPU as a process sees it: the shape of ``/run/nvidia-sim/gpus.json`` entries."""

    index: int
    host_index: int
    uuid: str
    name: str
    memory_total_bytes: int
    memory_free_bytes: int


class ProcEntry(TypedDict):
    """One GPU memory user: the shape of ``/run/nvidia-sim/procs/<id>.json``."""

    pid: int
    name: str
    container_id: str | None
    gpu_memory_bytes: dict[str, int]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json_atomic(path: Path, value: object) -> None:
    """Write JSON so that a concurrent reader never sees a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def profile() -> dict[str, Any]:
    """The host's GPU profile (raises FileNotFoundError off a sim host)."""
    data: dict[str, Any] = _read_json(PROFILE)
    return data


def loaded_module() -> dict[str, str] | None:
    """The driver module loaded since boot, ``{"version", "flavor"}``, or None when none is loaded."""
    try:
        data: dict[str, str] = _read_json(MODULE_LOADED)
    except FileNotFoundError:
        return None
    return data


def installed_module() -> dict[str, str] | None:
    """The driver module installed on disk by the driver package, or None."""
    try:
        data: dict[str, str] = _read_json(MODULE_ON_DISK)
    except FileNotFoundError:
        return None
    return data


def faults(path: Path = FAULTS) -> dict[str, Any]:
    """Fault switches; an absent file means none."""
    try:
        data: dict[str, Any] = _read_json(path)
    except FileNotFoundError:
        return {}
    return data


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def live_procs(prune: bool = True) -> dict[str, ProcEntry]:
    """Registry entries whose process still runs; entries of dead processes are removed when ``prune``."""
    entries: dict[str, ProcEntry] = {}
    if not PROCS_DIR.is_dir():
        return entries
    for path in sorted(PROCS_DIR.glob("*.json")):
        try:
            entry: ProcEntry = _read_json(path)
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        if pid_alive(int(entry["pid"])):
            entries[path.stem] = entry
        elif prune:
            with contextlib.suppress(OSError):
                path.unlink()
    return entries


def used_bytes_by_gpu(exclude: str | None = None) -> dict[int, int]:
    """Bytes held by live processes per host GPU index (driver reservation not included)."""
    used: dict[int, int] = {}
    for entry_id, entry in live_procs().items():
        if entry_id == exclude:
            continue
        for index, amount in entry["gpu_memory_bytes"].items():
            used[int(index)] = used.get(int(index), 0) + int(amount)
    return used


def select_gpus(visible: str | None, prof: dict[str, Any]) -> list[dict[str, Any]]:
    """The profile's GPUs named by an ``NVIDIA_VISIBLE_DEVICES``/``CUDA_VISIBLE_DEVICES`` value, in order.

    None or "all" selects every GPU; "", "none" and "void" select none; otherwise a comma list of
    indices or UUIDs. An unknown index or UUID raises ValueError, as the real container CLI refuses it.
    """
    gpus: list[dict[str, Any]] = list(prof["gpus"])
    if visible is None or visible.strip() == "all":
        return gpus
    if visible.strip() in ("", "none", "void"):
        return []
    chosen: list[dict[str, Any]] = []
    for token in (t.strip() for t in visible.split(",") if t.strip()):
        match = [g for g in gpus if str(g["index"]) == token or g["uuid"] == token]
        if not match:
            raise ValueError(f"unknown device id: {token}")
        chosen.append(match[0])
    return chosen


def gpu_views(selected: list[dict[str, Any]], prof: dict[str, Any], exclude: str | None = None) -> list[GpuView]:
    """``gpus.json`` entries for the selected GPUs: free = total - driver reservation - live processes."""
    used = used_bytes_by_gpu(exclude=exclude)
    total = int(prof["memory_total_bytes"])
    reserved = int(prof.get("memory_reserved_bytes", 0))
    return [
        GpuView(
            index=position,
            host_index=int(gpu["index"]),
            uuid=str(gpu["uuid"]),
            name=str(prof["name"]),
            memory_total_bytes=total,
            memory_free_bytes=max(0, total - reserved - used.get(int(gpu["index"]), 0)),
        )
        for position, gpu in enumerate(selected)
    ]


def visible_gpus(visible: str | None) -> list[GpuView]:
    """What a native process on this host sees for a ``CUDA_VISIBLE_DEVICES`` value."""
    prof = profile()
    return gpu_views(select_gpus(visible, prof), prof)


def register(
    entry_id: str, pid: int, name: str, bytes_by_host_index: dict[int, int], container_id: str | None = None
) -> None:
    """Record that ``pid`` holds GPU memory (``/run/nvidia-sim/procs/<entry_id>.json``)."""
    entry = ProcEntry(
        pid=pid,
        name=name,
        container_id=container_id,
        gpu_memory_bytes={str(index): int(amount) for index, amount in bytes_by_host_index.items()},
    )
    write_json_atomic(PROCS_DIR / f"{entry_id}.json", entry)


def unregister(entry_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (PROCS_DIR / f"{entry_id}.json").unlink()


def gpu_memory_utilization(args: list[str]) -> float:
    """``--gpu-memory-utilization`` from a vLLM argv (``--flag v`` or ``--flag=v``), else the default."""
    for position, arg in enumerate(args):
        if arg == "--gpu-memory-utilization" and position + 1 < len(args):
            return float(args[position + 1])
        if arg.startswith("--gpu-memory-utilization="):
            return float(arg.split("=", 1)[1])
    return DEFAULT_GPU_MEMORY_UTILIZATION
