"""The host probe's JSON as typed records, and how the core gets it.

+ ``parse_probe(text, host)``: the JSON printed by ``ms4fleet/hostside/probe.py`` -> ``ProbeReport``
  (one-line ``ProbeError`` naming the host and field when it is not a probe report).
+ ``probe_script()``: the host-side file engines copy to a host and run with ``python3``.
+ ``run_probe(source)``: run the probe here (this machine is the host) and parse it.

``ProbeReport.gpu_kind(gpu)`` maps a probed GPU to its catalog kind by PCI device id, then by name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ms4fleet.catalog import GpuKind, gpu_kind_by_name, gpu_kind_by_pci_id

SCHEMA_VERSION = 1
Source = Literal["nvml", "nvidia-smi", "pci", "none"]


class _Record(BaseModel):
    # The probe and the core ship together: an unknown field means they drifted apart.
    model_config = ConfigDict(frozen=True, extra="forbid")


class KernelModule(_Record):
    loaded: bool
    version: str | None
    flavor: Literal["open", "proprietary"] | None
    license: str | None
    evidence: tuple[str, ...]


class Driver(_Record):
    version: str | None
    cuda_driver_version: str | None
    kernel_module: KernelModule


class Gpu(_Record):
    index: int
    uuid: str | None
    name: str | None
    pci_bus_id: str | None
    pci_device_id: str | None
    memory_total_bytes: int | None
    memory_reserved_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    compute_capability: str | None
    mig_mode: Literal["enabled", "disabled"] | None
    ecc_enabled: bool | None
    persistence_mode: bool | None


class MigDevice(_Record):
    gpu_index: int
    gpu_instance_id: int | None
    compute_instance_id: int | None
    mig_device: int
    memory_used_bytes: int | None
    memory_total_bytes: int | None


class GpuProcess(_Record):
    pid: int
    gpu_index: int | None
    gpu_uuid: str | None
    used_bytes: int | None
    name: str | None
    systemd_unit: str | None
    container_id: str | None
    container_name: str | None


class PciDevice(_Record):
    pci_bus_id: str | None
    pci_device_id: str | None


class Pci(_Record):
    gpus: tuple[PciDevice, ...]
    nvswitches: tuple[PciDevice, ...]


class NvSwitch(_Record):
    present: bool
    count: int
    evidence: str | None


class FabricManager(_Record):
    service: str | None
    nvml_states: tuple[str, ...]


class Kernels(_Record):
    running: str
    boot: tuple[str, ...]
    # Each kernel with a modules directory -> its nvidia.ko* files (relative to /lib/modules/<kernel>).
    modules: dict[str, tuple[str, ...]]


class SecureBoot(_Record):
    enabled: bool | None
    evidence: str | None


class Stack(_Record):
    """What installed the driver, Docker and the toolkit (``ms4fleet.adopt`` classifies it)."""

    packages: dict[str, str] | None
    module_file: str | None
    module_file_version: str | None
    module_owner: str | None
    dkms: tuple[str, ...] | None
    runfile_markers: tuple[str, ...]
    kernel: Kernels
    secure_boot: SecureBoot
    docker_binary: str | None
    daemon_json: bool


class ProbeReport(_Record):
    schema_version: int = Field(alias="schema")
    source: Source
    hostname: str
    time: str
    python: str
    driver: Driver
    gpus: tuple[Gpu, ...]
    mig_devices: tuple[MigDevice, ...]
    processes: tuple[GpuProcess, ...]
    pci: Pci
    nvswitch: NvSwitch
    fabric_manager: FabricManager
    # None from a probe older than the stack's reading (its captures are replayed as they were).
    stack: Stack | None = None
    errors: tuple[str, ...]

    def gpu(self, index: int) -> Gpu:
        for gpu in self.gpus:
            if gpu.index == index:
                return gpu
        raise KeyError(f"GPU {index} is not on {self.hostname} (it has {[g.index for g in self.gpus]})")

    def processes_on(self, index: int) -> tuple[GpuProcess, ...]:
        return tuple(proc for proc in self.processes if proc.gpu_index == index)

    def gpu_kind(self, gpu: Gpu) -> GpuKind | None:
        """The catalog kind of a probed GPU: by PCI device id first (present on every source), else by name."""
        if gpu.pci_device_id:
            kind = gpu_kind_by_pci_id(gpu.pci_device_id)
            if kind is not None:
                return kind
        return gpu_kind_by_name(gpu.name) if gpu.name else None


class ProbeError(ValueError):
    """The probe's output could not be read; the message names the host and the field."""


def parse_probe(text: str, host: str = "") -> ProbeReport:
    where = f"host {host}: " if host else ""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProbeError(f"{where}probe output is not JSON ({exc.msg} at char {exc.pos}): {text[:120]!r}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ProbeError(
            f"{where}probe schema {found!r}, this ms4fleet reads schema {SCHEMA_VERSION}: re-copy the probe"
        )
    try:
        return ProbeReport.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ProbeError(f"{where}probe field {field}: {first['msg']}") from exc


def probe_script() -> Path:
    """The single file engines copy to hosts (standard library + optional pynvml, Python 3.8+)."""
    return Path(__file__).with_name("hostside") / "probe.py"


def run_probe(source: str = "auto", python: str = sys.executable, timeout_s: float = 120.0) -> ProbeReport:
    """Run the probe on this machine, as an engine runs it on a host, and parse what it prints."""
    done = subprocess.run(
        [python, str(probe_script()), "--source", source],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if not done.stdout.strip():
        raise ProbeError(f"probe printed nothing (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return parse_probe(done.stdout)
