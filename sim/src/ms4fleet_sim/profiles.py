"""GPU profiles of sim hosts: parsing ``--gpus`` specs and rendering ``/etc/nvidia-sim/profile.json``.

GPU facts come from the core catalog (``ms4fleet.catalog``); only the board layout a real host shows
(PCI addresses, NVSwitch bridges, the driver's reserved memory) is the sim's own data.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from ms4fleet.burnin import expected
from ms4fleet.catalog import MIB, GpuKind, gpu_kinds

# Short forms accepted on the command line, besides the catalog ids themselves.
ALIASES = {
    "h100": "h100-sxm",
    "h100sxm": "h100-sxm",
    "h100nvl": "h100-nvl",
    "h100pcie": "h100-pcie",
    "h200": "h200-sxm",
    "h200sxm": "h200-sxm",
    "h200nvl": "h200-nvl",
    "b200": "b200",
}

# GPU PCI addresses of an 8-GPU HGX baseboard (as `lspci` lists them on a Hopper HGX server); hosts with
# fewer GPUs use the first ones.
GPU_BUSES = ("18", "2a", "3a", "5d", "9a", "ab", "ba", "db")
MAX_GPUS = len(GPU_BUSES)

# Hopper HGX baseboards expose four NVSwitches as PCI bridges "GH100 [H100 NVSwitch]" (10de:22a3).
# Blackwell HGX NVSwitches are not PCI devices on the host (Fabric Manager user guide), so none is listed.
HOPPER_NVSWITCH_ID = "0x22a3"
HOPPER_NVSWITCH_BUSES = ("05", "06", "07", "08")

# pci.ids names, what `lspci` without -n prints.
PCI_NAMES = {
    "0x2330": "GH100 [H100 SXM5 80GB]",
    "0x2321": "GH100 [H100 NVL]",
    "0x2331": "GH100 [H100 PCIe]",
    "0x2335": "GH100 [H200 SXM 141GB]",
    "0x233b": "GH100 [H200 NVL]",
    "0x2901": "GB100 [B200]",
    HOPPER_NVSWITCH_ID: "GH100 [H100 NVSwitch]",
}

# Memory the driver keeps on each GPU: NVML v1 reports it as used with no process (read on a real H200).
DRIVER_RESERVED_BYTES = 644939776
# nccl-tests on healthy HGX boards reach about 80% of the per-direction link figure; the sim's links do too.
SIM_BUSBW_SHARE = 0.8

_SPEC = re.compile(r"^(?P<kind>[a-z0-9-]+?)(?:[x:*](?P<count>\d+))?$")


@dataclass(frozen=True)
class GpuSpec:
    """What one ``--gpus`` value asks for: a catalog GPU kind and a count per host."""

    kind: str
    count: int

    def label(self) -> str:
        """``h200-sxm:8``: a form ``parse_gpu_spec`` reads back."""
        return f"{self.kind}:{self.count}"


def parse_gpu_spec(text: str) -> GpuSpec:
    """Parse ``h200x8``, ``h200-sxm:8``, ``b200`` (8 by default) into a GpuSpec, or raise ValueError."""
    match = _SPEC.match(text.strip().lower())
    kinds = gpu_kinds()
    if match is None:
        raise ValueError(f"--gpus {text!r}: expected KIND[xCOUNT], e.g. h200x8 or h100-nvl:2")
    name = match["kind"]
    kind = name if name in kinds else ALIASES.get(name.replace("-", ""))
    if kind is None or kind not in kinds:
        known = ", ".join(sorted(kinds))
        raise ValueError(f"--gpus {text!r}: unknown GPU kind {name!r}; known kinds: {known} (or h100, h200)")
    count = int(match["count"] or MAX_GPUS)
    if not 1 <= count <= MAX_GPUS:
        raise ValueError(f"--gpus {text!r}: GPU count must be 1..{MAX_GPUS}, got {count}")
    return GpuSpec(kind=kind, count=count)


def assign_specs(specs: list[GpuSpec], hosts: int) -> list[GpuSpec]:
    """One spec per host: specs are dealt round-robin (``--gpus a --gpus b`` over 3 hosts = a, b, a)."""
    if hosts < 1:
        raise ValueError(f"--hosts must be at least 1, got {hosts}")
    if not specs:
        raise ValueError("--gpus: give at least one GPU spec, e.g. --gpus h200x8")
    if len(specs) > hosts:
        raise ValueError(f"--gpus given {len(specs)} times for {hosts} host(s): give at most one per host")
    return [specs[i % len(specs)] for i in range(hosts)]


def _gpu_uuid(host: str, index: int) -> str:
    return "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{index}.{host}.gpu.ms4fleet-sim"))


def _serial(host: str, index: int) -> str:
    return str(1650000000000 + uuid.uuid5(uuid.NAMESPACE_DNS, f"{index}.{host}.serial").int % 10**9)


def render_profile(host: str, spec: GpuSpec) -> dict[str, Any]:
    """The ``profile.json`` of one host (format in docs/simulation.md)."""
    kind: GpuKind = gpu_kinds()[spec.kind]
    nvswitch = kind.has_nvswitch(spec.count)
    switches = (
        [{"pci_bus_id": f"00000000:{bus}:00.0", "pci_device_id": HOPPER_NVSWITCH_ID} for bus in HOPPER_NVSWITCH_BUSES]
        if nvswitch and kind.architecture == "hopper"
        else []
    )
    return {
        "host": host,
        "kind": kind.id,
        "name": kind.name,
        "count": spec.count,
        "memory_total_bytes": kind.memory_mib * MIB,
        "memory_reserved_bytes": DRIVER_RESERVED_BYTES,
        "compute_capability": kind.compute_capability,
        "architecture": kind.architecture,
        "pci_device_id": kind.pci_device_ids[0],
        "pci_name": PCI_NAMES.get(kind.pci_device_ids[0], "Device"),
        "nvswitch": nvswitch,
        "nvlink5": kind.nvlink5,
        # A healthy link's all-reduce busbw in the sim: a healthy group's share of the catalog's figure.
        "allreduce_busbw_gb_s": round(SIM_BUSBW_SHARE * expected(kind, spec.count)[1], 1),
        "form_factor": kind.form_factor,
        "gpus": [
            {
                "index": index,
                "uuid": _gpu_uuid(host, index),
                "pci_bus_id": f"00000000:{GPU_BUSES[index]}:00.0",
                "serial": _serial(host, index),
            }
            for index in range(spec.count)
        ],
        "nvswitches": switches,
        "pci_names": {HOPPER_NVSWITCH_ID: PCI_NAMES[HOPPER_NVSWITCH_ID]},
    }
