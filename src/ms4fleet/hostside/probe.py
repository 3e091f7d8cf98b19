#!/usr/bin/env python3
"""GPU probe: what a host has and what is using it, printed as one JSON document.

Engines copy this single file to a host and run ``python3 probe.py``; it needs only the standard library
of Python 3.8+ and uses ``pynvml`` (nvidia-ml-py) when importable. Sources, tried in order unless
``--source`` forces one, and named in the output's ``source``:

+ ``nvml``: NVML through pynvml (exact bytes, v2 memory info with the driver's reserved memory);
+ ``nvidia-smi``: ``--query-gpu``/``--query-compute-apps`` CSV plus the plain table (CUDA version, MIG);
+ ``pci``: ``lspci -Dn -d 10de:`` (or sysfs) when no driver answers: PCI ids only, no memory figures.

Independently of the source it reads the kernel module (/proc/driver/nvidia/version, modinfo), what installed
the driver, Docker and the toolkit (dpkg, DKMS, runfile markers), the kernels and their NVIDIA modules, Secure
Boot, NVSwitch presence, the fabric manager unit and, for every GPU process, the systemd unit or container owning it
(from /proc/<pid>/cgroup), which the headroom gate needs to count a replaced replica's memory as free.
Failures of single reads land in ``errors``; the probe itself never raises.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

SCHEMA_VERSION = 1
MIB = 1024 * 1024
COMMAND_TIMEOUT_S = 20
NVIDIA_PCI_VENDOR = "10de"
# PCI class codes: 0300 VGA, 0302 3D controller (data-center GPUs), 0680 "other bridge" (NVSwitch).
GPU_PCI_CLASSES = ("0300", "0302")
NVSWITCH_PCI_CLASS = "0680"
# nvidia-smi lives outside PATH on some images (e.g. /usr/local/nvidia/bin in GPU containers and VMs).
EXTRA_BIN_DIRS = ("/usr/local/nvidia/bin", "/usr/bin", "/usr/sbin", "/sbin", "/usr/local/bin")

QUERY_GPU_FIELDS = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "pci.device_id",
    "memory.total",
    "memory.reserved",
    "memory.used",
    "memory.free",
    "compute_cap",
    "mig.mode.current",
    "ecc.mode.current",
    "persistence_mode",
    "driver_version",
)
# Fields older drivers reject ('Field "compute_cap" is not a valid field to query.'): dropped on retry.
OPTIONAL_QUERY_GPU_FIELDS = ("memory.reserved", "compute_cap")
QUERY_APPS_FIELDS = ("gpu_uuid", "pid", "used_memory", "process_name")

Json = Dict[str, Any]


# --------------------------------------------------------------------------------------------- helpers


def _find_binary(name: str) -> Optional[str]:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(EXTRA_BIN_DIRS)
    return shutil.which(name, path=path)


def _run(argv: List[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def normalize_bus_id(value: str) -> Optional[str]:
    """``00000000:19:00.0`` (NVML, nvidia-smi) or ``0000:19:00.0`` (lspci) -> ``0000:19:00.0``."""
    match = re.search(r"([0-9A-Fa-f]{1,8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])", value or "")
    if not match:
        return None
    domain, bus, device, function = match.groups()
    return "%04x:%s:%s.%s" % (int(domain, 16), bus.lower(), device.lower(), function)


def normalize_device_id(value: Any) -> Optional[str]:
    """A PCI device id from any source -> ``0x2335``.

    NVML and nvidia-smi report device and vendor in one 32-bit value (``0x233510DE``: device in the high
    half); lspci and sysfs report the 16-bit device id alone.
    """
    if value is None:
        return None
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().lower()
        if not re.fullmatch(r"(0x)?[0-9a-f]{1,8}", text):
            return None
        number = int(text, 16)
    if number > 0xFFFF:
        number >>= 16
    return "0x%04x" % number


def _missing(value: Optional[str]) -> bool:
    """nvidia-smi's ways of saying "no value": [N/A], [Not Supported], [Unknown Error], N/A, ERR!, ..."""
    if value is None:
        return True
    text = value.strip()
    return not text or (text.startswith("[") and text.endswith("]")) or text in ("N/A", "ERR!")


def _clean(value: Optional[str]) -> Optional[str]:
    return None if _missing(value) else str(value).strip()


def _mib_to_bytes(value: Optional[str]) -> Optional[int]:
    text = _clean(value)
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)(?:\s*MiB)?", text)
    return int(match.group(1)) * MIB if match else None


def _on_off(value: Optional[str]) -> Optional[bool]:
    text = (_clean(value) or "").lower()
    if text in ("enabled", "on", "1", "yes"):
        return True
    if text in ("disabled", "off", "0", "no"):
        return False
    return None


def _mig_mode(value: Optional[str]) -> Optional[str]:
    enabled = _on_off(value)
    if enabled is None:
        return None
    return "enabled" if enabled else "disabled"


# ------------------------------------------------------------------------ process ownership (cgroups)

_UNIT_RE = re.compile(r"/([^/]+\.service)(?:/|$)")
_CONTAINER_RES = (
    re.compile(r"docker[-/]([0-9a-f]{64})"),
    re.compile(r"cri-containerd[-:]([0-9a-f]{64})"),
    re.compile(r"libpod-([0-9a-f]{64})"),
    re.compile(r"/containerd/[^/]*/([0-9a-f]{64})"),
)


def parse_cgroup(text: str) -> Json:
    """/proc/<pid>/cgroup -> the systemd unit and container id the process runs in (either may be None).

    Works for cgroup v1 (one line per hierarchy) and v2 (``0::/path``). The deepest ``.service`` wins so
    that a container's init process started by ``docker run`` inside ``ms4fleet-vllm@0.service`` maps to
    that unit when Docker uses the systemd cgroup driver with the unit as parent.
    """
    unit = None
    container = None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        units = _UNIT_RE.findall(path)
        if units:
            unit = units[-1]
        for pattern in _CONTAINER_RES:
            match = pattern.search(path)
            if match:
                container = match.group(1)
                break
    return {"systemd_unit": unit, "container_id": container}


def process_owner(pid: int, proc_root: str = "/proc") -> Json:
    text = _read("%s/%d/cgroup" % (proc_root, pid))
    owner: Json = parse_cgroup(text) if text is not None else {"systemd_unit": None, "container_id": None}
    comm = _read("%s/%d/comm" % (proc_root, pid))
    owner["comm"] = comm.strip() if comm else None
    return owner


def docker_container_names(errors: List[str]) -> Dict[str, str]:
    """Full container id -> name, from the docker CLI when there is one (empty otherwise)."""
    docker = _find_binary("docker")
    if docker is None:
        return {}
    try:
        done = _run([docker, "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        errors.append("docker ps: %s" % exc)
        return {}
    if done.returncode != 0:
        errors.append("docker ps: %s" % done.stderr.strip()[:200])
        return {}
    names = {}
    for line in done.stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            names[parts[0]] = parts[1].strip()
    return names


# ------------------------------------------------------------------------------ nvidia-smi: CSV + table


def parse_query_csv(text: str, fields: Sequence[str]) -> List[Dict[str, Optional[str]]]:
    """``--format=csv,noheader,nounits`` output -> one dict per row, missing markers as None."""
    rows = []
    for record in csv.reader(io.StringIO(text), skipinitialspace=True):
        if not record or not "".join(record).strip():
            continue
        values = [_clean(value) for value in record]
        values += [None] * (len(fields) - len(values))
        rows.append({name: values[position] for position, name in enumerate(fields)})
    return rows


def _cells(line: str) -> Optional[List[str]]:
    """The cells of one ``| a | b | c |`` table line; indentation and text after the last bar ignored."""
    start = line.find("|")
    end = line.rfind("|")
    if start < 0 or end <= start:
        return None
    return [cell.strip() for cell in line[start + 1 : end].split("|")]


_GPU_ROW_RE = re.compile(r"^(\d+)\s+(.*?)\s+(On|Off|N/A|ERR!)$")
_MEM_RE = re.compile(r"(\d+)MiB\s*/\s*(\d+)MiB")
_PROC_RE = re.compile(r"^(\d+)\s+(?:(\S+)\s+(\S+)\s+)?(\d+)\s+([CGM](?:\+[CGM])*)\s+(.*?)\s+(\d+MiB|\S*\.\.\.|N/A)$")


def parse_smi_table(text: str) -> Json:
    """The plain ``nvidia-smi`` table -> driver, CUDA version, GPUs, MIG devices and processes.

    Handles the pre-R535 narrow layout, the R535 one and the R550+ one (wider bus-id column), rows of
    ``N/A`` and ``ERR!``, MIG-enabled GPUs, and process memory that nvidia-smi truncates to ``13319...``
    (kept as None with ``memory_truncated``).
    """
    result: Json = {
        "driver_version": None,
        "cuda_version": None,
        "gpus": [],
        "mig_devices": [],
        "processes": [],
    }
    header = re.search(r"Driver Version:\s*([0-9.]+)", text)
    if header:
        result["driver_version"] = header.group(1)
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", text)
    if cuda:
        result["cuda_version"] = cuda.group(1)

    section = None
    in_body = False
    gpu: Optional[Json] = None
    row_in_gpu = 0
    mig: Optional[Json] = None
    for line in text.splitlines():
        stripped = line.strip()
        if "GPU  Name" in line and "Persistence-M" in line:
            section, in_body = "gpus", False
            continue
        if "MIG devices:" in line:
            section, in_body = "mig", False
            continue
        if "Processes:" in line:
            section, in_body = "processes", False
            continue
        if stripped.startswith("|=") or stripped.startswith("+="):
            in_body = True
            continue
        if not in_body or section is None:
            continue
        cells = _cells(line)
        if cells is None:
            if not stripped and section == "gpus":
                section = None
            continue

        if section == "gpus":
            first = _GPU_ROW_RE.match(cells[0]) if cells else None
            if first:
                gpu = {
                    "index": int(first.group(1)),
                    "name": _clean(first.group(2)),
                    "persistence_mode": _on_off(first.group(3)),
                    "pci_bus_id": None,
                    "ecc_enabled": None,
                    "memory_used_bytes": None,
                    "memory_total_bytes": None,
                    "mig_mode": None,
                }
                if len(cells) > 1:
                    gpu["pci_bus_id"] = normalize_bus_id(cells[1])
                if len(cells) > 2:
                    ecc = cells[2]
                    # A count of volatile uncorrected errors means ECC is on; MIG-enabled GPUs show "On".
                    gpu["ecc_enabled"] = True if ecc.isdigit() else _on_off(ecc)
                result["gpus"].append(gpu)
                row_in_gpu = 1
                continue
            if gpu is None:
                continue
            row_in_gpu += 1
            if row_in_gpu == 2 and len(cells) > 1:
                memory = _MEM_RE.search(cells[1])
                if memory:
                    gpu["memory_used_bytes"] = int(memory.group(1)) * MIB
                    gpu["memory_total_bytes"] = int(memory.group(2)) * MIB
            elif row_in_gpu == 3 and len(cells) > 2:
                gpu["mig_mode"] = _mig_mode(cells[2].rstrip("*"))
        elif section == "mig":
            ids = cells[0].split() if cells else []
            if len(ids) == 4 and all(part.isdigit() for part in ids):
                mig = {
                    "gpu_index": int(ids[0]),
                    "gpu_instance_id": int(ids[1]),
                    "compute_instance_id": int(ids[2]),
                    "mig_device": int(ids[3]),
                    "memory_used_bytes": None,
                    "memory_total_bytes": None,
                }
                memory = _MEM_RE.search(cells[1]) if len(cells) > 1 else None
                if memory:
                    mig["memory_used_bytes"] = int(memory.group(1)) * MIB
                    mig["memory_total_bytes"] = int(memory.group(2)) * MIB
                result["mig_devices"].append(mig)
        elif section == "processes":
            match = _PROC_RE.match(cells[0]) if cells else None
            if not match:
                continue
            gpu_index, gi, ci, pid, kind, name, memory_text = match.groups()
            truncated = memory_text.endswith("...")
            result["processes"].append(
                {
                    "gpu_index": int(gpu_index),
                    "gpu_instance_id": int(gi) if gi and gi.isdigit() else None,
                    "compute_instance_id": int(ci) if ci and ci.isdigit() else None,
                    "pid": int(pid),
                    "type": kind,
                    "name": name,
                    "used_bytes": None if truncated else _mib_to_bytes(memory_text),
                    "memory_truncated": truncated,
                }
            )
    return result


def _query_gpus_csv(smi: str, errors: List[str]) -> Optional[List[Dict[str, Optional[str]]]]:
    fields = list(QUERY_GPU_FIELDS)
    for _ in range(len(OPTIONAL_QUERY_GPU_FIELDS) + 1):
        done = _run([smi, "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"])
        if done.returncode == 0:
            rows = parse_query_csv(done.stdout, fields)
            for row in rows:
                for name in OPTIONAL_QUERY_GPU_FIELDS:
                    row.setdefault(name, None)
            return rows
        rejected = re.search(r'Field "([^"]+)" is not a valid field', done.stdout + done.stderr)
        if rejected and rejected.group(1) in fields and rejected.group(1) in OPTIONAL_QUERY_GPU_FIELDS:
            fields.remove(rejected.group(1))
            continue
        errors.append("nvidia-smi --query-gpu: %s" % (done.stdout + done.stderr).strip()[:300])
        return None
    return None


def collect_nvidia_smi(smi: str, errors: List[str]) -> Json:
    """GPUs and processes from nvidia-smi; raises RuntimeError when nvidia-smi gives no GPU list."""
    rows = _query_gpus_csv(smi, errors)
    if rows is None:
        raise RuntimeError("nvidia-smi --query-gpu failed")
    table: Json = {"cuda_version": None, "driver_version": None, "mig_devices": [], "processes": []}
    done = _run([smi])
    if done.returncode == 0:
        table = parse_smi_table(done.stdout)
    else:
        errors.append("nvidia-smi: %s" % (done.stdout + done.stderr).strip()[:300])

    gpus: List[Json] = []
    for row in rows:
        gpus.append(
            {
                "index": int(row.get("index") or len(gpus)),
                "uuid": row.get("uuid"),
                "name": row.get("name"),
                "pci_bus_id": normalize_bus_id(row.get("pci.bus_id") or ""),
                "pci_device_id": normalize_device_id(row.get("pci.device_id")),
                "memory_total_bytes": _mib_to_bytes(row.get("memory.total")),
                "memory_reserved_bytes": _mib_to_bytes(row.get("memory.reserved")),
                "memory_used_bytes": _mib_to_bytes(row.get("memory.used")),
                "memory_free_bytes": _mib_to_bytes(row.get("memory.free")),
                "compute_capability": row.get("compute_cap"),
                "mig_mode": _mig_mode(row.get("mig.mode.current")),
                "ecc_enabled": _on_off(row.get("ecc.mode.current")),
                "persistence_mode": _on_off(row.get("persistence_mode")),
            }
        )
    by_uuid = {gpu["uuid"]: gpu["index"] for gpu in gpus if gpu["uuid"]}

    processes: List[Json] = []
    done = _run([smi, "--query-compute-apps=" + ",".join(QUERY_APPS_FIELDS), "--format=csv,noheader,nounits"])
    if done.returncode == 0:
        for row in parse_query_csv(done.stdout, QUERY_APPS_FIELDS):
            if row.get("pid") is None or not str(row["pid"]).isdigit():
                continue
            processes.append(
                {
                    "pid": int(str(row["pid"])),
                    "gpu_index": by_uuid.get(row.get("gpu_uuid") or ""),
                    "gpu_uuid": row.get("gpu_uuid"),
                    "used_bytes": _mib_to_bytes(row.get("used_memory")),
                    "name": row.get("process_name"),
                }
            )
    else:
        errors.append("nvidia-smi --query-compute-apps: %s" % (done.stdout + done.stderr).strip()[:300])
        uuids = {gpu["index"]: gpu["uuid"] for gpu in gpus}
        for proc in table["processes"]:
            if proc["type"] == "G":  # graphics-only clients (a desktop) are not compute co-tenants
                continue
            processes.append(
                {
                    "pid": proc["pid"],
                    "gpu_index": proc["gpu_index"],
                    "gpu_uuid": uuids.get(proc["gpu_index"]),
                    "used_bytes": proc["used_bytes"],
                    "name": proc["name"],
                }
            )
    driver = rows[0].get("driver_version") if rows else None
    return {
        "driver_version": driver or table["driver_version"],
        "cuda_driver_version": table["cuda_version"],
        "gpus": gpus,
        "mig_devices": table["mig_devices"],
        "processes": processes,
    }


# ------------------------------------------------------------------------------------------------ NVML


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_call(errors: List[str], what: str, fn: Callable[[], Any]) -> Any:
    """One NVML read; "not supported" is a normal answer (None), anything else is noted in errors."""
    try:
        return fn()
    except Exception as exc:  # pynvml raises NVMLError subclasses generated at import time
        if "Not Supported" not in str(exc):
            errors.append("nvml %s: %s" % (what, exc))
        return None


def _bind(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """``fn`` with its arguments fixed, for ``_nvml_call`` (lambdas in loops would bind late)."""
    return lambda: fn(*args)


def _cuda_version(number: Optional[int]) -> Optional[str]:
    if not number:
        return None
    return "%d.%d" % (number // 1000, (number % 1000) // 10)


def _fabric_state(pynvml: Any, handle: Any, errors: List[str]) -> Optional[str]:
    """NVML's view of the NVLink fabric for one GPU (set up by fabric manager on NVSwitch systems)."""
    import ctypes

    struct = getattr(pynvml, "c_nvmlGpuFabricInfo_t", None)
    getter = getattr(pynvml, "nvmlDeviceGetGpuFabricInfo", None)
    if struct is None or getter is None:
        return None
    info = struct()
    if _nvml_call(errors, "fabric info", lambda: getter(handle, ctypes.byref(info))) is None:
        return None
    names = {0: "not-supported", 1: "not-started", 2: "in-progress", 3: "completed"}
    return names.get(int(info.state), "unknown")


def collect_nvml(errors: List[str]) -> Json:
    """GPUs and processes from NVML; raises when pynvml is missing or NVML cannot initialise."""
    import pynvml

    pynvml.nvmlInit()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = _nvml_call(errors, "cuda version", pynvml.nvmlSystemGetCudaDriverVersion)
        gpus: List[Json] = []
        processes: List[Json] = []
        mig_devices: List[Json] = []
        fabric: List[Optional[str]] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpu = _nvml_gpu(pynvml, handle, index, errors)
            gpus.append(gpu)
            fabric.append(_fabric_state(pynvml, handle, errors))
            procs = _nvml_call(errors, "processes", _bind(pynvml.nvmlDeviceGetComputeRunningProcesses, handle))
            for proc in procs or []:
                used = getattr(proc, "usedGpuMemory", None)
                processes.append(
                    {
                        "pid": int(proc.pid),
                        "gpu_index": index,
                        "gpu_uuid": gpu["uuid"],
                        "used_bytes": int(used) if used is not None else None,
                        "name": None,
                    }
                )
            if gpu["mig_mode"] == "enabled":
                mig_devices.extend(_nvml_mig_devices(pynvml, handle, index, errors))
        return {
            "driver_version": driver,
            "cuda_driver_version": _cuda_version(cuda),
            "gpus": gpus,
            "mig_devices": mig_devices,
            "processes": processes,
            "nvml_fabric_states": fabric,
        }
    finally:
        pynvml.nvmlShutdown()


def _nvml_gpu(pynvml: Any, handle: Any, index: int, errors: List[str]) -> Json:
    pci = _nvml_call(errors, "pci info", _bind(pynvml.nvmlDeviceGetPciInfo, handle))
    memory_total = memory_reserved = memory_used = memory_free = None
    v2 = getattr(pynvml, "nvmlMemory_v2", None)
    memory = None
    if v2 is not None:
        try:
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle, version=v2)
            memory_reserved = int(memory.reserved)
        except Exception:  # drivers before R510 lack nvmlDeviceGetMemoryInfo_v2: fall back to v1
            memory = None
    if memory is None:
        memory = _nvml_call(errors, "memory info", _bind(pynvml.nvmlDeviceGetMemoryInfo, handle))
    if memory is not None:
        memory_total, memory_used, memory_free = int(memory.total), int(memory.used), int(memory.free)
    capability = _nvml_call(errors, "compute capability", _bind(pynvml.nvmlDeviceGetCudaComputeCapability, handle))
    mig = _nvml_call(errors, "mig mode", _bind(pynvml.nvmlDeviceGetMigMode, handle))
    ecc = _nvml_call(errors, "ecc mode", _bind(pynvml.nvmlDeviceGetEccMode, handle))
    persistence = _nvml_call(errors, "persistence mode", _bind(pynvml.nvmlDeviceGetPersistenceMode, handle))
    return {
        "index": index,
        "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
        "name": _text(pynvml.nvmlDeviceGetName(handle)),
        "pci_bus_id": normalize_bus_id(_text(pci.busId)) if pci is not None else None,
        "pci_device_id": normalize_device_id(int(pci.pciDeviceId)) if pci is not None else None,
        "memory_total_bytes": memory_total,
        "memory_reserved_bytes": memory_reserved,
        "memory_used_bytes": memory_used,
        "memory_free_bytes": memory_free,
        "compute_capability": "%d.%d" % tuple(capability) if capability else None,
        "mig_mode": None if mig is None else ("enabled" if mig[0] == 1 else "disabled"),
        "ecc_enabled": None if ecc is None else bool(ecc[0]),
        "persistence_mode": None if persistence is None else bool(persistence),
    }


def _nvml_mig_devices(pynvml: Any, handle: Any, index: int, errors: List[str]) -> List[Json]:
    devices = []
    count = _nvml_call(errors, "mig count", _bind(pynvml.nvmlDeviceGetMaxMigDeviceCount, handle)) or 0
    for slot in range(count):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except Exception:  # empty MIG slots answer NotFound
            continue
        memory = _nvml_call(errors, "mig memory", _bind(pynvml.nvmlDeviceGetMemoryInfo, mig))
        devices.append(
            {
                "gpu_index": index,
                "gpu_instance_id": _nvml_call(errors, "gi id", _bind(pynvml.nvmlDeviceGetGpuInstanceId, mig)),
                "compute_instance_id": _nvml_call(errors, "ci id", _bind(pynvml.nvmlDeviceGetComputeInstanceId, mig)),
                "mig_device": slot,
                "memory_used_bytes": int(memory.used) if memory is not None else None,
                "memory_total_bytes": int(memory.total) if memory is not None else None,
            }
        )
    return devices


# ------------------------------------------------------------------------------------------------- PCI


def parse_lspci(text: str) -> Json:
    """``lspci -Dn -d 10de:`` -> NVIDIA GPUs and NVSwitches by PCI address, class and device id."""
    gpus = []
    switches = []
    for line in text.splitlines():
        match = re.match(r"^(\S+)\s+(?:Class\s+)?([0-9a-fA-F]{4}):\s+([0-9a-fA-F]{4}):([0-9a-fA-F]{4})", line.strip())
        if not match or match.group(3).lower() != NVIDIA_PCI_VENDOR:
            continue
        address, klass, _, device = match.groups()
        entry = {"pci_bus_id": normalize_bus_id(address), "pci_device_id": normalize_device_id(device)}
        if klass in GPU_PCI_CLASSES:
            gpus.append(entry)
        elif klass == NVSWITCH_PCI_CLASS:
            switches.append(entry)
    return {"gpus": gpus, "nvswitches": switches}


def _sysfs_pci(root: str = "/sys/bus/pci/devices") -> Json:
    lines = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        names = []
    for name in names:
        vendor = (_read(os.path.join(root, name, "vendor")) or "").strip().lower()
        klass = (_read(os.path.join(root, name, "class")) or "").strip().lower()
        device = (_read(os.path.join(root, name, "device")) or "").strip().lower()
        if vendor == "0x" + NVIDIA_PCI_VENDOR and klass.startswith("0x") and device.startswith("0x"):
            lines.append("%s %s: %s:%s" % (name, klass[2:6], NVIDIA_PCI_VENDOR, device[2:]))
    return parse_lspci("\n".join(lines))


def collect_pci(errors: List[str]) -> Json:
    lspci = _find_binary("lspci")
    if lspci is not None:
        try:
            done = _run([lspci, "-Dn", "-d", NVIDIA_PCI_VENDOR + ":"])
            if done.returncode == 0:
                return parse_lspci(done.stdout)
            errors.append("lspci: %s" % done.stderr.strip()[:200])
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append("lspci: %s" % exc)
    return _sysfs_pci()


def pci_gpus(pci: Json) -> List[Json]:
    return [
        {
            "index": position,
            "uuid": None,
            "name": None,
            "pci_bus_id": entry["pci_bus_id"],
            "pci_device_id": entry["pci_device_id"],
            "memory_total_bytes": None,
            "memory_reserved_bytes": None,
            "memory_used_bytes": None,
            "memory_free_bytes": None,
            "compute_capability": None,
            "mig_mode": None,
            "ecc_enabled": None,
            "persistence_mode": None,
        }
        for position, entry in enumerate(pci["gpus"])
    ]


# ------------------------------------------------------------------------------------- kernel, fabric


def parse_driver_version_file(text: str) -> Json:
    """/proc/driver/nvidia/version -> driver version and module flavour ("open" | "proprietary")."""
    version = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    flavor = None
    if "NVRM version" in text:
        flavor = "open" if "Open Kernel Module" in text else "proprietary"
    return {"version": version.group(1) if version else None, "flavor": flavor}


def collect_kernel_module(errors: List[str], proc_root: str = "/proc") -> Json:
    text = _read(proc_root + "/driver/nvidia/version")
    info: Json = parse_driver_version_file(text) if text else {"version": None, "flavor": None}
    evidence = []
    if text:
        evidence.append("/proc/driver/nvidia/version")
    modinfo = _find_binary("modinfo")
    license_text = None
    if modinfo is not None:
        try:
            done = _run([modinfo, "-F", "license", "nvidia"])
            if done.returncode == 0 and done.stdout.strip():
                license_text = done.stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append("modinfo: %s" % exc)
    if license_text:
        evidence.append("modinfo license: %s" % license_text)
        if info["flavor"] is None:
            # The open modules are dual-licensed; the proprietary ones say "NVIDIA".
            info["flavor"] = "open" if "MIT" in license_text else "proprietary"
    return {
        "loaded": text is not None,
        "version": info["version"],
        "flavor": info["flavor"],
        "license": license_text,
        "evidence": evidence,
    }


def collect_nvswitch(pci: Optional[Json], proc_root: str = "/proc") -> Json:
    try:
        devices = os.listdir(proc_root + "/driver/nvidia-nvswitch/devices")
    except OSError:
        devices = []
    if devices:
        return {"present": True, "count": len(devices), "evidence": "/proc/driver/nvidia-nvswitch/devices"}
    switches = (pci or {}).get("nvswitches") or []
    if switches:
        return {"present": True, "count": len(switches), "evidence": "lspci bridge class 0680"}
    return {"present": False, "count": 0, "evidence": None}


def collect_fabric_manager(errors: List[str]) -> Optional[str]:
    """``systemctl is-active nvidia-fabricmanager``: active, inactive, failed, ...; None without systemd."""
    systemctl = _find_binary("systemctl")
    if systemctl is None or not os.path.isdir("/run/systemd/system"):
        return None
    try:
        done = _run([systemctl, "is-active", "nvidia-fabricmanager"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        errors.append("systemctl: %s" % exc)
        return None
    return done.stdout.strip() or None


# --------------------------------------------------------------------------------- what owns the stack

# Installed packages the core classifies the driver, Docker and the kernel by (dpkg-query patterns).
STACK_PACKAGES = (
    "nvidia-driver-*",
    "nvidia-dkms-*",
    "nvidia-kernel-*",
    "linux-modules-nvidia-*",
    "cuda-drivers*",
    "nvidia-open*",
    "nvidia-container-toolkit",
    "docker.io",
    "docker-ce",
    "containerd",
    "containerd.io",
    "moby-engine",
    "dkms",
    "unattended-upgrades",
)
# The runfile installer leaves these behind (and no package owns its module).
RUNFILE_MARKERS = ("/usr/bin/nvidia-uninstall", "/var/log/nvidia-installer.log")
# UEFI's global variable GUID: the SecureBoot variable's 5th byte is 1 when Secure Boot is on.
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e98c3362b2d5"
_MODULE_NAME = re.compile(r"^nvidia\.ko(\.(zst|xz|gz))?$")


def _command(argv: List[str], errors: List[str], ok: Sequence[int] = (0,)) -> Optional[str]:
    """stdout of a command that exists and exits with a code in ``ok``, else None (a failure to run it lands
    in errors)."""
    binary = _find_binary(argv[0])
    if binary is None:
        return None
    try:
        done = _run([binary, *argv[1:]])
    except (OSError, subprocess.TimeoutExpired) as exc:
        errors.append("%s: %s" % (argv[0], exc))
        return None
    return done.stdout if done.returncode in ok else None


def parse_dpkg_query(text: str) -> Dict[str, str]:
    """``dpkg-query -W -f '${db:Status-Abbrev}\t${Package}\t${Version}\n'`` -> installed package -> version."""
    found = {}
    for line in text.splitlines():
        parts = line.split("\t")
        # Want, then status: "ii " installed, "hi " installed and held (as ms4fleet holds its packages); "rc "
        # removed with its config left, "un " unknown: not installed.
        if len(parts) == 3 and parts[0][1:2] == "i":
            found[parts[1]] = parts[2]
    return found


def kernel_modules(root: str = "/lib/modules") -> Dict[str, List[str]]:
    """Every kernel with a modules directory -> its nvidia.ko* files, relative to that directory."""
    out: Dict[str, List[str]] = {}
    try:
        kernels = sorted(os.listdir(root))
    except OSError:
        return out
    for kver in kernels:
        base = os.path.join(root, kver)
        found = []
        for dirpath, _dirs, names in os.walk(base):
            found += [os.path.relpath(os.path.join(dirpath, n), base) for n in names if _MODULE_NAME.match(n)]
        out[kver] = sorted(found)
    return out


def boot_kernels(boot: str = "/boot") -> List[str]:
    """Kernel versions with an image in /boot (vmlinuz-<version>)."""
    try:
        names = os.listdir(boot)
    except OSError:
        return []
    return sorted(
        n[len("vmlinuz-") :] for n in names if n.startswith("vmlinuz-") and not os.path.islink(os.path.join(boot, n))
    )


def secure_boot(errors: List[str], efivar: str = SECURE_BOOT_VAR) -> Json:
    """Secure Boot state: mokutil --sb-state, else the EFI variable; None where neither says (no UEFI)."""
    text = _command(["mokutil", "--sb-state"], errors)
    if text and "SecureBoot" in text:
        return {"enabled": "enabled" in text.lower().split("secureboot", 1)[1][:20], "evidence": "mokutil --sb-state"}
    try:
        with open(efivar, "rb") as handle:
            raw = handle.read()
    except OSError:
        return {"enabled": None, "evidence": None}
    # efivarfs: 4 bytes of attributes, then the value.
    return {"enabled": len(raw) >= 5 and raw[4] == 1, "evidence": efivar}


def collect_stack(errors: List[str], root: str = "") -> Json:
    """What installed the driver, Docker and the container toolkit, and the kernels the driver must follow."""
    listing = _command(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\n", *STACK_PACKAGES],
        errors,
        # 1: some pattern matched no package (the others are still listed).
        ok=(0, 1),
    )
    module_file = _command(["modinfo", "-F", "filename", "nvidia"], errors)
    module_file = module_file.strip() if module_file and module_file.strip().startswith("/") else None
    module_version = _command(["modinfo", "-F", "version", "nvidia"], errors) if module_file else None
    owner = None
    if module_file:
        # "linux-modules-nvidia-580-open-6.8.0-45-generic: /lib/modules/.../nvidia.ko"; DKMS builds have none.
        found = _command(["dpkg-query", "-S", os.path.realpath(module_file)], errors)
        owner = found.split(":", 1)[0].strip() if found else None
    dkms = _command(["dkms", "status"], errors)
    uname = os.uname().release
    return {
        "packages": parse_dpkg_query(listing) if listing is not None else None,
        "module_file": module_file,
        "module_file_version": module_version.strip() if module_version else None,
        "module_owner": owner,
        "dkms": [line for line in dkms.splitlines() if line.startswith("nvidia")] if dkms is not None else None,
        "runfile_markers": [m for m in RUNFILE_MARKERS if os.path.exists(root + m)],
        "kernel": {
            "running": uname,
            "boot": boot_kernels(root + "/boot"),
            "modules": kernel_modules(root + "/lib/modules"),
        },
        "secure_boot": secure_boot(errors, root + SECURE_BOOT_VAR),
        "docker_binary": _find_binary("docker") or _find_binary("dockerd"),
        "daemon_json": os.path.exists(root + "/etc/docker/daemon.json"),
    }


# ----------------------------------------------------------------------------------------------- main


def probe(source: str = "auto") -> Json:
    errors: List[str] = []
    data: Optional[Json] = None
    used = "none"
    attempts = ["nvml", "nvidia-smi", "pci"] if source == "auto" else [source]
    pci: Optional[Json] = None
    for attempt in attempts:
        try:
            if attempt == "nvml":
                data = collect_nvml(errors)
            elif attempt == "nvidia-smi":
                smi = _find_binary("nvidia-smi")
                if smi is None:
                    raise RuntimeError("nvidia-smi not found")
                data = collect_nvidia_smi(smi, errors)
            else:
                pci = collect_pci(errors)
                data = {
                    "driver_version": None,
                    "cuda_driver_version": None,
                    "gpus": pci_gpus(pci),
                    "mig_devices": [],
                    "processes": [],
                }
            used = attempt
            break
        except Exception as exc:  # each source may fail in its own way; the next one is tried
            errors.append("%s: %s: %s" % (attempt, type(exc).__name__, exc))
    if pci is None:
        pci = collect_pci(errors)

    kernel = collect_kernel_module(errors)
    names = docker_container_names(errors) if data and data["processes"] else {}
    processes = []
    for found in (data or {}).get("processes", []):
        owner = process_owner(found["pid"])
        proc = dict(found)
        proc["name"] = proc.get("name") or owner["comm"]
        proc["systemd_unit"] = owner["systemd_unit"]
        proc["container_id"] = owner["container_id"]
        proc["container_name"] = names.get(owner["container_id"] or "")
        processes.append(proc)

    fabric_states = (data or {}).get("nvml_fabric_states") or []
    known_states = [state for state in fabric_states if state is not None]
    return {
        "schema": SCHEMA_VERSION,
        "source": used,
        "hostname": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": "%d.%d.%d" % sys.version_info[:3],
        "driver": {
            "version": (data or {}).get("driver_version") or kernel["version"],
            "cuda_driver_version": (data or {}).get("cuda_driver_version"),
            "kernel_module": kernel,
        },
        "gpus": (data or {}).get("gpus", []),
        "mig_devices": (data or {}).get("mig_devices", []),
        "processes": processes,
        "pci": pci,
        "nvswitch": collect_nvswitch(pci),
        "fabric_manager": {
            "service": collect_fabric_manager(errors),
            "nvml_states": known_states,
        },
        "stack": collect_stack(errors),
        "errors": errors,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        choices=("auto", "nvml", "nvidia-smi", "pci"),
        default="auto",
        help="force one source (default: NVML, then nvidia-smi, then PCI ids)",
    )
    parser.add_argument("--indent", type=int, default=None, help="pretty-print the JSON")
    args = parser.parse_args(argv)
    report = probe(args.source)
    json.dump(report, sys.stdout, indent=args.indent, sort_keys=True)
    sys.stdout.write("\n")
    # A forced source that did not answer is an error a caller must see; "auto" always reports.
    return 1 if args.source != "auto" and report["source"] != args.source else 0


if __name__ == "__main__":
    sys.exit(main())
