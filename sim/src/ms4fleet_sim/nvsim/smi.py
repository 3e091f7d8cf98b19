"""``nvidia-smi`` of the simulated driver: answers from the host profile and the GPU memory registry.

Supported: ``--query-gpu=... --format=csv[,noheader][,nounits]`` (with ``-i``), ``--query-compute-apps=...``,
``-L``, ``-q``, ``topo -m``, ``-pm 0|1``, ``--version`` and the default table. Memory is reported the way
R580 reports it (NVML v2): the driver's reservation under ``memory.reserved``, processes under
``memory.used``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from ms4fleet_sim.nvsim import state

DRIVER_INFO = Path("/usr/lib/nvidia-sim/driver.json")
PERSISTENCE = state.RUN_DIR / "persistence.json"
MIB = 1024 * 1024

NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)


# What a healthy GPU answers (the values the real H200 gave, tests/data/h200/health); every key is a fault switch.
HEALTHY: dict[str, Any] = {
    "ecc_mode": True,
    "ecc_corrected_volatile": 0,
    "ecc_uncorrected_volatile": 0,
    "ecc_corrected_aggregate": 0,
    "ecc_uncorrected_aggregate": 0,
    "row_remap_correctable": 0,
    "row_remap_uncorrectable": 0,
    "row_remap_pending": False,
    "row_remap_failure": False,
    "banks_without_spare_rows": 0,
    "pcie_gen": 5,
    "pcie_width": 16,
    "pcie_replays": 0,
    "clocks_event_reasons": 0x1,
    "temperature_c": 32,
    "mig": False,
    "fabric_state": "Completed",
    # A runtime Xid (0: none), shown as the driver shows its effect: see ``ECC_XIDS`` and ``FALLEN_OFF_BUS``.
    "xid": 0,
}
# Xids of an uncorrectable ECC error (48 double-bit, 94/95 contained/uncontained): one more uncorrectable
# error on the volatile and aggregate counters. Xid 79: the GPU fell off the bus and is gone from every
# listing. (The NVRM kernel-log line itself is not simulated: a container has no kernel log of its own.)
ECC_XIDS = frozenset({48, 94, 95})
FALLEN_OFF_BUS = 79


class SmiError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _driver() -> dict[str, str]:
    """The library side (this package's version); fails like nvidia-smi when it differs from the module."""
    library: dict[str, str] = json.loads(DRIVER_INFO.read_text(encoding="utf-8"))
    module = state.loaded_module()
    if module is None:
        raise SmiError(NO_DRIVER, 9)
    if module["version"] != library["version"]:
        nvml = ".".join(library["version"].split(".")[:2])
        raise SmiError(
            f"Failed to initialize NVML: Driver/library version mismatch\nNVML library version: {nvml}\n", 18
        )
    return library


def _persistence() -> bool:
    try:
        return bool(json.loads(PERSISTENCE.read_text(encoding="utf-8")).get("enabled"))
    except FileNotFoundError:
        return False


class Snapshot:
    """Everything one nvidia-smi call reports, read once."""

    def __init__(self) -> None:
        self.driver = _driver()
        self.profile = state.profile()
        self.procs = state.live_procs()
        self.persistence = _persistence()
        self.total = int(self.profile["memory_total_bytes"])
        self.reserved = int(self.profile.get("memory_reserved_bytes", 0))
        self.faults = state.faults(state.FAULTS)
        self.nvswitch = bool(self.profile.get("nvswitch"))

    def health(self, index: int) -> dict[str, Any]:
        """GPU ``index``'s health values: a healthy H200's, with the host's ``gpu_health`` fault switches
        (faults.json: ``{"gpu_health": {"3": {"row_remap_pending": true}}}``) laid over them."""
        overrides = (self.faults.get("gpu_health") or {}).get(str(index)) or {}
        unknown = set(overrides) - set(HEALTHY)
        if unknown:
            raise SmiError(f"nvidia-sim: unknown gpu_health switch(es) {sorted(unknown)}\n", 2)
        values = {**HEALTHY, **overrides}
        if values["xid"] in ECC_XIDS:
            values["ecc_uncorrected_volatile"] += 1
            values["ecc_uncorrected_aggregate"] += 1
        return values

    @property
    def gpus(self) -> list[dict[str, Any]]:
        return [g for g in self.profile["gpus"] if self.health(int(g["index"]))["xid"] != FALLEN_OFF_BUS]

    def used(self, index: int) -> int:
        return sum(int(p["gpu_memory_bytes"].get(str(index), 0)) for p in self.procs.values())

    def free(self, index: int) -> int:
        return max(0, self.total - self.reserved - self.used(index))

    def apps(self) -> list[tuple[state.ProcEntry, dict[str, Any], int]]:
        rows = []
        for proc in self.procs.values():
            for gpu in self.gpus:
                amount = int(proc["gpu_memory_bytes"].get(str(gpu["index"]), 0))
                if amount:
                    rows.append((proc, gpu, amount))
        return rows


def _mib(value: int) -> int:
    return value // MIB


def gpu_field(snap: Snapshot, gpu: dict[str, Any], name: str, units: bool) -> str:
    index = int(gpu["index"])
    prof = snap.profile
    memory = {
        "memory.total": snap.total,
        "memory.reserved": snap.reserved,
        "memory.used": snap.used(index),
        "memory.free": snap.free(index),
    }
    if name in memory:
        return f"{_mib(memory[name])} MiB" if units else str(_mib(memory[name]))
    device = prof["pci_device_id"].removeprefix("0x").upper()
    health = snap.health(index)
    values: dict[str, str] = {
        "index": str(index),
        "count": str(len(snap.gpus)),
        "name": prof["name"],
        "gpu_name": prof["name"],
        "uuid": gpu["uuid"],
        "gpu_uuid": gpu["uuid"],
        "serial": gpu["serial"],
        "pci.bus_id": gpu["pci_bus_id"],
        "gpu_bus_id": gpu["pci_bus_id"],
        "pci.device_id": f"0x{device}10DE",
        "pci.domain": "0x0000",
        "pci.bus": "0x" + gpu["pci_bus_id"].split(":")[1].upper(),
        "driver_version": snap.driver["version"],
        "compute_cap": prof["compute_capability"],
        "persistence_mode": "Enabled" if snap.persistence else "Disabled",
        "mig.mode.current": _enabled(health["mig"]),
        "mig.mode.pending": _enabled(health["mig"]),
        "ecc.mode.current": _enabled(health["ecc_mode"]),
        "ecc.mode.pending": _enabled(health["ecc_mode"]),
        "ecc.errors.corrected.volatile.total": str(health["ecc_corrected_volatile"]),
        "ecc.errors.uncorrected.volatile.total": str(health["ecc_uncorrected_volatile"]),
        "ecc.errors.corrected.aggregate.total": str(health["ecc_corrected_aggregate"]),
        "ecc.errors.uncorrected.aggregate.total": str(health["ecc_uncorrected_aggregate"]),
        # Hopper replaced page retirement with row remapping: nvidia-smi answers [N/A], as on the real H200.
        "retired_pages.pending": "[N/A]",
        "retired_pages.single_bit_ecc.count": "[N/A]",
        "retired_pages.double_bit.count": "[N/A]",
        "pcie.link.gen.current": str(health["pcie_gen"]),
        "pcie.link.gen.max": "5",
        "pcie.link.width.current": str(health["pcie_width"]),
        "pcie.link.width.max": "16",
        "clocks_event_reasons.active": f"0x{int(health['clocks_event_reasons']):016X}",
        "power.limit": "700.00 W" if units else "700.00",
        "temperature.gpu": str(health["temperature_c"]),
        "utilization.gpu": "0 %" if units else "0",
        "utilization.memory": "0 %" if units else "0",
        "power.draw": "72.50 W" if units else "72.50",
        "pstate": "P0",
        "vbios_version": "96.00.AF.00.01",
        "display_mode": "Disabled",
        "compute_mode": "Default",
    }
    if name not in values:
        raise SmiError(f'Field "{name}" is not a valid field to query.\n', 2)
    return values[name]


def _enabled(on: bool) -> str:
    return "Enabled" if on else "Disabled"


def app_field(proc: state.ProcEntry, gpu: dict[str, Any], amount: int, name: str, units: bool) -> str:
    values: dict[str, str] = {
        "pid": str(proc["pid"]),
        "process_name": proc["name"],
        "name": proc["name"],
        "used_memory": f"{_mib(amount)} MiB" if units else str(_mib(amount)),
        "used_gpu_memory": f"{_mib(amount)} MiB" if units else str(_mib(amount)),
        "gpu_uuid": str(gpu["uuid"]),
        "gpu_bus_id": str(gpu["pci_bus_id"]),
        "gpu_serial": str(gpu["serial"]),
    }
    if name not in values:
        raise SmiError(f'Field "{name}" is not a valid field to query.\n', 2)
    return values[name]


def _format(fmt: str) -> tuple[bool, bool]:
    parts = {p.strip() for p in fmt.split(",")}
    if "csv" not in parts:
        raise SmiError(f'"{fmt}" is not a valid format. Only csv is supported.\n', 2)
    return "noheader" not in parts, "nounits" not in parts


def _header(fields: list[str], units: bool) -> str:
    unit = {
        "memory.total": " [MiB]",
        "memory.used": " [MiB]",
        "memory.free": " [MiB]",
        "memory.reserved": " [MiB]",
        "used_memory": " [MiB]",
        "used_gpu_memory": " [MiB]",
        "power.draw": " [W]",
        "power.limit": " [W]",
        "utilization.gpu": " [%]",
    }
    return ", ".join(f + (unit.get(f, "") if units else "") for f in fields)


def _select(snap: Snapshot, ids: str | None) -> list[dict[str, Any]]:
    if ids is None:
        return snap.gpus
    try:
        return state.select_gpus(ids, snap.profile)
    except ValueError as exc:
        raise SmiError("No devices were found\n", 6) from exc


def query_gpu(snap: Snapshot, fields: list[str], fmt: str, ids: str | None) -> str:
    header, units = _format(fmt)
    lines = [_header(fields, units)] if header else []
    for gpu in _select(snap, ids):
        lines.append(", ".join(gpu_field(snap, gpu, f, units) for f in fields))
    return "\n".join(lines) + "\n" if lines else ""


def query_apps(snap: Snapshot, fields: list[str], fmt: str) -> str:
    header, units = _format(fmt)
    lines = [_header(fields, units)] if header else []
    for proc, gpu, amount in snap.apps():
        lines.append(", ".join(app_field(proc, gpu, amount, f, units) for f in fields))
    return "\n".join(lines) + "\n" if lines else ""


def list_gpus(snap: Snapshot) -> str:
    return "".join(f"GPU {g['index']}: {snap.profile['name']} (UUID: {g['uuid']})\n" for g in snap.gpus)


def full_query(snap: Snapshot, ids: str | None) -> str:
    prof = snap.profile
    out = [
        "",
        "==============NVSMI LOG==============",
        "",
        f"Timestamp                                 : {datetime.now().strftime('%a %b %d %H:%M:%S %Y')}",
        f"Driver Version                            : {snap.driver['version']}",
        f"CUDA Version                              : {snap.driver['cuda_version']}",
        "",
        f"Attached GPUs                             : {len(snap.gpus)}",
    ]
    for gpu in _select(snap, ids):
        index = int(gpu["index"])
        health = snap.health(index)
        out += [
            f"GPU {gpu['pci_bus_id']}",
            f"    Product Name                          : {prof['name']}",
            "    Product Brand                         : NVIDIA",
            f"    Product Architecture                  : {prof.get('architecture', 'hopper').capitalize()}",
            "    Display Mode                          : Disabled",
            f"    Persistence Mode                      : {'Enabled' if snap.persistence else 'Disabled'}",
            "    MIG Mode",
            "        Current                           : Disabled",
            "        Pending                           : Disabled",
            f"    Serial Number                         : {gpu['serial']}",
            f"    GPU UUID                              : {gpu['uuid']}",
            f"    Minor Number                          : {index}",
            "    PCI",
            f"        Bus Id                            : {gpu['pci_bus_id']}",
            f"        Device Id                         : 0x{prof['pci_device_id'].removeprefix('0x').upper()}10DE",
            "    FB Memory Usage",
            f"        Total                             : {_mib(snap.total)} MiB",
            f"        Reserved                          : {_mib(snap.reserved)} MiB",
            f"        Used                              : {_mib(snap.used(index))} MiB",
            f"        Free                              : {_mib(snap.free(index))} MiB",
            "    Compute Mode                          : Default",
            "    ECC Mode",
            f"        Current                           : {_enabled(health['ecc_mode'])}",
            f"        Pending                           : {_enabled(health['ecc_mode'])}",
            "    Remapped Rows",
            f"        Correctable Error                 : {health['row_remap_correctable']}",
            f"        Uncorrectable Error               : {health['row_remap_uncorrectable']}",
            f"        Pending                           : {'Yes' if health['row_remap_pending'] else 'No'}",
            f"        Remapping Failure Occurred        : {'Yes' if health['row_remap_failure'] else 'No'}",
            "        Bank Remap Availability Histogram",
            f"            Max                           : {3072 - health['banks_without_spare_rows']} bank(s)",
            "            High                          : 0 bank(s)",
            "            Partial                       : 0 bank(s)",
            "            Low                           : 0 bank(s)",
            f"            None                          : {health['banks_without_spare_rows']} bank(s)",
            "    PCIe Replays",
            f"        Replays Since Reset               : {health['pcie_replays']}",
            "    Temperature",
            f"        GPU Current Temp                  : {health['temperature_c']} C",
            "        GPU Shutdown Temp                 : 95 C",
            "        GPU Slowdown Temp                 : 89 C",
            "    Fabric",
            f"        State                             : {health['fabric_state'] if snap.nvswitch else 'N/A'}",
            f"        Status                            : {'Success' if snap.nvswitch else 'N/A'}",
            "    Processes",
        ]
        rows = [(p, a) for p, g, a in snap.apps() if g["index"] == index]
        if not rows:
            out.append("        None")
        for proc, amount in rows:
            out += [
                "        GPU instance ID                   : N/A",
                f"        Process ID                        : {proc['pid']}",
                "            Type                          : C",
                f"            Name                          : {proc['name']}",
                f"            Used GPU Memory               : {_mib(amount)} MiB",
            ]
        out.append("")
    return "\n".join(out) + "\n"


def topology(snap: Snapshot) -> str:
    gpus = snap.gpus
    link = "NV18" if snap.profile.get("nvswitch") else "NODE"
    names = [f"GPU{g['index']}" for g in gpus]
    lines = ["\t" + "\t".join(names) + "\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID"]
    for row in gpus:
        cells = [" X " if row is col else link for col in gpus]
        lines.append(f"GPU{row['index']}\t" + "\t".join(cells) + "\t0-1\t0\t\tN/A")
    lines += [
        "",
        "Legend:",
        "",
        "  X    = Self",
        "  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)",
        "  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node",
        "  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)",
        "  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)",
        "  PIX  = Connection traversing at most a single PCIe bridge",
        "  NV#  = Connection traversing a bonded set of # NVLinks",
    ]
    return "\n".join(lines) + "\n"


def table(snap: Snapshot) -> str:
    prof = snap.profile
    bar = "+-----------------------------------------------------------------------------------------+"
    out = [
        datetime.now().strftime("%a %b %d %H:%M:%S %Y"),
        bar,
        f"| NVIDIA-SMI {snap.driver['version']:<20} Driver Version: {snap.driver['version']:<15}"
        f"CUDA Version: {snap.driver['cuda_version']:<9}|",
        bar.replace("-", "=", 0),
    ]
    for gpu in snap.gpus:
        index = int(gpu["index"])
        used = f"{_mib(snap.used(index))}MiB / {_mib(snap.total)}MiB"
        out.append(
            f"| {index:>3}  {prof['name']:<30} {'On' if snap.persistence else 'Off':>3} | "
            f"{gpu['pci_bus_id']:>16} Off | {used:>22} |"
        )
    out.append(bar)
    out.append("| Processes:" + " " * 78 + "|")
    apps = snap.apps()
    if not apps:
        out.append("|  No running processes found" + " " * 61 + "|")
    for proc, gpu, amount in apps:
        out.append(f"| {gpu['index']:>4}  {proc['pid']:>8}  C  {proc['name']:<50} {_mib(amount):>9}MiB |")
    out.append(bar)
    return "\n".join(out) + "\n"


def set_persistence(snap: Snapshot, enabled: bool) -> str:
    state.write_json_atomic(PERSISTENCE, {"enabled": enabled})
    word = "Enabled" if enabled else "Disabled"
    return "".join(f"{word} persistence mode for GPU {g['pci_bus_id']}.\n" for g in snap.gpus) + "All done.\n"


def version(snap: Snapshot) -> str:
    nvml = ".".join(snap.driver["version"].split(".")[:2])
    return (
        f"NVIDIA-SMI version  : {snap.driver['version']}\n"
        f"NVML version        : {nvml}\n"
        f"DRIVER version      : {snap.driver['version']}\n"
        f"CUDA Version        : {snap.driver['cuda_version']}\n"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvidia-smi", add_help=True)
    parser.add_argument("command", nargs="*")
    parser.add_argument("--query-gpu", dest="query_gpu")
    parser.add_argument("--query-compute-apps", dest="query_apps")
    parser.add_argument("--format", default="csv")
    parser.add_argument("-i", "--id", dest="ids")
    parser.add_argument("-L", "--list-gpus", action="store_true")
    parser.add_argument("-q", "--query", action="store_true")
    parser.add_argument("-pm", "--persistence-mode", dest="pm", choices=["0", "1"])
    parser.add_argument("-m", "--matrix", action="store_true")
    parser.add_argument("--version", action="store_true")
    return parser


def run(argv: list[str]) -> str:
    args = _parser().parse_args(argv)
    snap = Snapshot()
    if args.version:
        return version(snap)
    if args.command[:1] == ["topo"]:
        if not args.matrix:
            raise SmiError("topo: only -m is supported by the simulated nvidia-smi\n", 2)
        return topology(snap)
    if args.command:
        raise SmiError(f"Invalid combination of input arguments: {' '.join(args.command)}\n", 2)
    if args.query_gpu:
        return query_gpu(snap, [f.strip() for f in args.query_gpu.split(",")], args.format, args.ids)
    if args.query_apps:
        return query_apps(snap, [f.strip() for f in args.query_apps.split(",")], args.format)
    if args.list_gpus:
        return list_gpus(snap)
    if args.query:
        return full_query(snap, args.ids)
    if args.pm is not None:
        return set_persistence(snap, args.pm == "1")
    return table(snap)


def main(argv: list[str] | None = None) -> int:
    try:
        sys.stdout.write(run(sys.argv[1:] if argv is None else argv))
    except SmiError as exc:
        sys.stdout.write(str(exc))
        return exc.code
    return 0
