#!/usr/bin/env python3
"""GPU health readings: what each GPU's NVML (or nvidia-smi) says about its health, as one JSON document.

Like the probe, engines copy this single standard-library file (Python 3.8+) to a host and run it; it uses
``pynvml`` (nvidia-ml-py) when importable and falls back to ``nvidia-smi``. It only READS: the verdict
(healthy / degraded / unhealthy, with reasons and fixes) is the core's (``ms4fleet.health``), so one set of
rules judges both sources and replays of captures.

Every reading is ``{"status": "ok", "value": ...}``, ``{"status": "unsupported"}`` (the driver or the GPU
does not answer it: never healthy, never unhealthy) or ``{"status": "error", "detail": "..."}``. Readings:
ECC mode and the four ECC counters, retired pages, row remapping (and the remapper histogram), PCIe
generation/width (current, max) and replay counter (and its growth over ``--watch-s``), NVLink state per
link, clocks event reasons, temperature with its slowdown/shutdown thresholds, power and limit,
persistence, MIG mode, fabric state (NVSwitch systems), Xid events (NVML events while watching, the
kernel log since boot) and, on request where DCGM is installed, ``dcgmi diag -r 1|2|3``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

SCHEMA_VERSION = 1
COMMAND_TIMEOUT_S = 20
EXTRA_BIN_DIRS = "/usr/local/nvidia/bin:/usr/bin:/usr/sbin:/sbin:/usr/local/bin"
NVLINK_MAX_LINKS = 18
# dcgmi diag run levels take seconds (1), minutes (2) or up to an hour (3).
DCGM_TIMEOUT_S = {1: 120, 2: 900, 3: 5400}

# NVML's clocks event reason bits (nvml.h, nvmlClocksEventReason*), by the name the core's rules use.
CLOCKS_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}

# nvidia-smi --query-gpu fields, by reading; any "[N/A]"/"[Not Supported]" answer is "unsupported".
SMI_FIELDS = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "ecc.mode.current",
    "ecc.mode.pending",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.corrected.aggregate.total",
    "ecc.errors.uncorrected.aggregate.total",
    "retired_pages.pending",
    "retired_pages.single_bit_ecc.count",
    "retired_pages.double_bit.count",
    "pcie.link.gen.current",
    "pcie.link.gen.max",
    "pcie.link.width.current",
    "pcie.link.width.max",
    "clocks_event_reasons.active",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "persistence_mode",
    "mig.mode.current",
    "mig.mode.pending",
)
# "NVRM: Xid (PCI:0000:19:00): 79, pid=..., GPU has fallen off the bus."
XID_RE = re.compile(r"NVRM: Xid \(PCI:([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2})[^)]*\): (\d+)(?:, (.*))?")

Json = Dict[str, Any]


def ok(value: Any) -> Json:
    return {"status": "ok", "value": value}


def unsupported() -> Json:
    return {"status": "unsupported"}


def error(detail: str) -> Json:
    return {"status": "error", "detail": detail[:300]}


def bus_key(value: str) -> str:
    """``00000000:19:00.0`` / ``0000:19:00`` -> ``0000:19:00`` (domain:bus:device, lower case)."""
    match = re.search(r"([0-9A-Fa-f]{1,8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})", value or "")
    if not match:
        return (value or "").lower()
    domain, bus, device = match.groups()
    return "%04x:%s:%s" % (int(domain, 16), bus.lower(), device.lower())


def _run(argv: List[str]) -> Tuple[int, str, str]:
    try:
        done = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return 127, "", str(err)
    return done.returncode, done.stdout, done.stderr


def reasons_of(mask: int) -> List[str]:
    return [name for bit, name in sorted(CLOCKS_EVENT_REASONS.items()) if mask & bit]


# ------------------------------------------------------------------------------------------------ NVML


def _nvml_reader(nvml: Any) -> Callable[[Callable[[], Any]], Json]:
    def read(call: Callable[[], Any]) -> Json:
        try:
            return ok(call())
        except nvml.NVMLError_NotSupported:
            return unsupported()
        except Exception as err:
            return error("%s: %s" % (type(err).__name__, err))

    return read


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_gpu(nvml: Any, handle: Any, index: int) -> Json:
    """Every reading of one GPU through NVML."""
    read = _nvml_reader(nvml)
    gpu: Json = {"index": index}
    gpu["uuid"] = _decode(nvml.nvmlDeviceGetUUID(handle))
    gpu["name"] = _decode(nvml.nvmlDeviceGetName(handle))
    gpu["pci_bus_id"] = bus_key(_decode(nvml.nvmlDeviceGetPciInfo(handle).busId))
    r: Json = {}
    r["ecc_mode"] = read(lambda: dict(zip(("current", "pending"), map(bool, nvml.nvmlDeviceGetEccMode(handle)))))
    for kind, error_type in (
        ("corrected", nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
        ("uncorrected", nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
    ):
        for scope, counter in (("volatile", nvml.NVML_VOLATILE_ECC), ("aggregate", nvml.NVML_AGGREGATE_ECC)):
            r["ecc_%s_%s" % (kind, scope)] = read(_ecc_counter(nvml, handle, error_type, counter))
    r["retired_pages"] = read(
        lambda: {
            "pending": bool(nvml.nvmlDeviceGetRetiredPagesPendingStatus(handle)),
            "single_bit": len(
                nvml.nvmlDeviceGetRetiredPages(handle, nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
            ),
            "double_bit": len(
                nvml.nvmlDeviceGetRetiredPages(handle, nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
            ),
        }
    )

    def remap() -> Json:
        correctable, uncorrectable, pending, failure = nvml.nvmlDeviceGetRemappedRows(handle)
        return {
            "correctable": int(correctable),
            "uncorrectable": int(uncorrectable),
            "pending": bool(pending),
            "failure": bool(failure),
        }

    r["row_remap"] = read(remap)

    def histogram() -> Json:
        values = nvml.nvmlDeviceGetRowRemapperHistogram(handle)
        return {name: int(getattr(values, name)) for name in ("max", "high", "partial", "low", "none")}

    r["row_remap_histogram"] = read(histogram)
    r["pcie_link"] = read(
        lambda: {
            "gen_current": int(nvml.nvmlDeviceGetCurrPcieLinkGeneration(handle)),
            "gen_max": int(nvml.nvmlDeviceGetGpuMaxPcieLinkGeneration(handle)),
            "width_current": int(nvml.nvmlDeviceGetCurrPcieLinkWidth(handle)),
            "width_max": int(nvml.nvmlDeviceGetMaxPcieLinkWidth(handle)),
        }
    )
    r["pcie_replay"] = read(lambda: int(nvml.nvmlDeviceGetPcieReplayCounter(handle)))
    r["nvlink"] = _nvml_nvlinks(nvml, handle)
    reasons_call = (
        getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    )
    r["clocks_event_reasons"] = read(
        lambda: {"mask": int(reasons_call(handle)), "active": reasons_of(int(reasons_call(handle)))}
    )
    r["temperature"] = read(
        lambda: {
            "gpu_c": int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            "slowdown_c": _threshold(nvml, handle, nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
            "shutdown_c": _threshold(nvml, handle, nvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN),
            "tlimit_margin_c": _margin(nvml, handle),
        }
    )
    r["power"] = read(
        lambda: {
            "draw_w": round(nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, 1),
            "limit_w": round(nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0, 1),
        }
    )
    r["persistence"] = read(lambda: bool(nvml.nvmlDeviceGetPersistenceMode(handle)))
    r["mig"] = read(lambda: dict(zip(("current", "pending"), map(bool, nvml.nvmlDeviceGetMigMode(handle)))))
    r["fabric"] = _nvml_fabric(nvml, handle)
    gpu["readings"] = r
    return gpu


def _ecc_counter(nvml: Any, handle: Any, error_type: int, counter: int) -> Callable[[], int]:
    return lambda: int(nvml.nvmlDeviceGetTotalEccErrors(handle, error_type, counter))


def _threshold(nvml: Any, handle: Any, which: int) -> Optional[int]:
    try:
        return int(nvml.nvmlDeviceGetTemperatureThreshold(handle, which))
    except Exception:
        return None


def _margin(nvml: Any, handle: Any) -> Optional[int]:
    """Degrees left before the GPU's T.Limit (drivers >= 550 report temperatures this way)."""
    call = getattr(nvml, "nvmlDeviceGetMarginTemperature", None)
    if call is None:
        return None
    try:
        value = call(handle)
        return int(getattr(value, "marginTemperature", value))
    except Exception:
        return None


def _nvml_nvlinks(nvml: Any, handle: Any) -> Json:
    links = []
    for link in range(NVLINK_MAX_LINKS):
        try:
            links.append({"link": link, "active": bool(nvml.nvmlDeviceGetNvLinkState(handle, link))})
        except nvml.NVMLError_NotSupported:
            break
        except nvml.NVMLError_InvalidArgument:
            break
        except nvml.NVMLError as err:
            return error("link %d: %s" % (link, err))
    return ok(links) if links else unsupported()


def _nvml_fabric(nvml: Any, handle: Any) -> Json:
    """NVML's fabric probe (NVSwitch systems): the V call where pynvml has it, else the struct-filling one."""

    def info() -> Any:
        # pynvml passes the struct straight to the C call: it must be allocated here and passed by reference.
        if hasattr(nvml, "nvmlDeviceGetGpuFabricInfoV") and hasattr(nvml, "c_nvmlGpuFabricInfoV_t"):
            out = nvml.c_nvmlGpuFabricInfoV_t()
            nvml.nvmlDeviceGetGpuFabricInfoV(handle, ctypes.byref(out))
        else:
            out = nvml.c_nvmlGpuFabricInfo_t()
            nvml.nvmlDeviceGetGpuFabricInfo(handle, ctypes.byref(out))
        return out

    got = _nvml_reader(nvml)(info)
    if got["status"] != "ok":
        return got
    state = int(got["value"].state)
    if state == 0:  # NVML_GPU_FABRIC_STATE_NOT_SUPPORTED: no fabric on this system
        return unsupported()
    names = {1: "not_started", 2: "in_progress", 3: "completed"}
    return ok({"state": names.get(state, str(state)), "status": int(got["value"].status)})


def nvml_watch_xids(nvml: Any, handles: List[Any], seconds: float) -> Json:
    """Critical Xid events NVML delivers while we watch: bus id -> [xid, ...]."""
    if seconds <= 0:
        return {}
    events: Dict[str, List[int]] = {}
    event_set = nvml.nvmlEventSetCreate()
    try:
        for handle in handles:
            try:
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, event_set)
            except nvml.NVMLError:
                continue
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = nvml.nvmlEventSetWait(event_set, int(max(1, (deadline - time.monotonic()) * 1000)))
            except nvml.NVMLError_Timeout:
                break
            bus = bus_key(_decode(nvml.nvmlDeviceGetPciInfo(data.device).busId))
            events.setdefault(bus, []).append(int(data.eventData))
    finally:
        nvml.nvmlEventSetFree(event_set)
    return events


def from_nvml(watch_s: float) -> Json:
    import pynvml as nvml

    nvml.nvmlInit()
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        first = [nvml_gpu(nvml, h, i) for i, h in enumerate(handles)]
        watched = nvml_watch_xids(nvml, handles, watch_s)
        if watch_s > 0:
            later = [_nvml_replay(nvml, h) for h in handles]
            for gpu, replay in zip(first, later):
                gpu["readings"]["pcie_replay_growth"] = _growth(gpu["readings"]["pcie_replay"], replay)
        return {
            "source": "nvml",
            "driver_version": _decode(nvml.nvmlSystemGetDriverVersion()),
            "gpus": first,
            "xid_watch": {"seconds": watch_s, "events": watched},
        }
    finally:
        nvml.nvmlShutdown()


def _nvml_replay(nvml: Any, handle: Any) -> Json:
    return _nvml_reader(nvml)(lambda: int(nvml.nvmlDeviceGetPcieReplayCounter(handle)))


def _growth(before: Json, after: Json) -> Json:
    if before.get("status") != "ok" or after.get("status") != "ok":
        return unsupported() if "unsupported" in (before.get("status"), after.get("status")) else error("no reading")
    return ok(int(after["value"]) - int(before["value"]))


# ------------------------------------------------------------------------------------------ nvidia-smi


def _smi_value(text: str) -> Tuple[str, Optional[str]]:
    """One CSV cell -> ("ok", text) or ("unsupported", None); nvidia-smi writes [N/A], [Not Supported] ..."""
    value = text.strip()
    if not value or value in ("N/A", "ERR!") or (value.startswith("[") and value.endswith("]")):
        return "unsupported", None
    return "ok", value


def _ints(row: Dict[str, str], **fields: str) -> Json:
    out: Json = {}
    for key, field in fields.items():
        status, value = _smi_value(row[field])
        if status != "ok" or value is None:
            return unsupported()
        try:
            out[key] = int(float(value))
        except ValueError:
            return error("%s=%r" % (field, value))
    return ok(out)


def _enabled(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("enabled", "yes", "1", "on")


def parse_smi(query_csv: str, details: Dict[str, Json]) -> List[Json]:
    """``nvidia-smi --query-gpu=SMI_FIELDS --format=csv,noheader,nounits`` and ``parse_smi_details`` of
    ``-q`` -> every GPU's readings."""
    gpus = []
    for line in query_csv.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(SMI_FIELDS):
            continue
        row = dict(zip(SMI_FIELDS, cells))
        bus = bus_key(row["pci.bus_id"])
        r: Json = {}
        mode = _smi_value(row["ecc.mode.current"])
        pending = _smi_value(row["ecc.mode.pending"])
        r["ecc_mode"] = (
            ok({"current": _enabled(mode[1]), "pending": _enabled(pending[1])}) if mode[0] == "ok" else unsupported()
        )
        for kind in ("corrected", "uncorrected"):
            for scope in ("volatile", "aggregate"):
                field = "ecc.errors.%s.%s.total" % (kind, scope)
                got = _ints(row, n=field)
                r["ecc_%s_%s" % (kind, scope)] = ok(got["value"]["n"]) if got["status"] == "ok" else got
        pages = _ints(row, single_bit="retired_pages.single_bit_ecc.count", double_bit="retired_pages.double_bit.count")
        status, value = _smi_value(row["retired_pages.pending"])
        if pages["status"] == "ok" and status == "ok":
            pages["value"]["pending"] = _enabled(value)
            r["retired_pages"] = pages
        else:
            r["retired_pages"] = unsupported() if pages["status"] != "error" else pages
        detail = details.get(bus, {})
        remap = detail.get("remap") or {}
        if len(remap) != 4 or any(_smi_value(v)[0] != "ok" for v in remap.values()):
            r["row_remap"] = unsupported()
        else:
            r["row_remap"] = ok(
                {
                    "correctable": int(remap["correctable"]),
                    "uncorrectable": int(remap["uncorrectable"]),
                    "pending": _enabled(remap["pending"]),
                    "failure": _enabled(remap["failure"]),
                }
            )
        histogram = detail.get("histogram") or {}
        r["row_remap_histogram"] = ok(histogram) if len(histogram) == 5 else unsupported()
        r["pcie_link"] = _ints(
            row,
            gen_current="pcie.link.gen.current",
            gen_max="pcie.link.gen.max",
            width_current="pcie.link.width.current",
            width_max="pcie.link.width.max",
        )
        r["pcie_replay"] = ok(detail["replays"]) if "replays" in detail else unsupported()
        r["nvlink"] = unsupported()
        status, value = _smi_value(row["clocks_event_reasons.active"])
        if status == "ok" and value is not None and re.fullmatch(r"0x[0-9A-Fa-f]+", value):
            mask = int(value, 16)
            r["clocks_event_reasons"] = ok({"mask": mask, "active": reasons_of(mask)})
        else:
            r["clocks_event_reasons"] = unsupported()
        status, value = _smi_value(row["temperature.gpu"])
        temperature: Json = {"gpu_c": int(float(value)) if status == "ok" and value is not None else None}
        for key in ("slowdown_c", "shutdown_c", "tlimit_margin_c", "slowdown_margin_c", "shutdown_margin_c"):
            temperature[key] = detail.get(key)
        r["temperature"] = ok(temperature) if temperature["gpu_c"] is not None else unsupported()
        power = [_smi_value(row[f]) for f in ("power.draw", "power.limit")]
        r["power"] = (
            ok({"draw_w": float(power[0][1] or 0), "limit_w": float(power[1][1] or 0)})
            if all(p[0] == "ok" for p in power)
            else unsupported()
        )
        status, value = _smi_value(row["persistence_mode"])
        r["persistence"] = ok(_enabled(value)) if status == "ok" else unsupported()
        mig = [_smi_value(row[f]) for f in ("mig.mode.current", "mig.mode.pending")]
        r["mig"] = (
            ok({"current": _enabled(mig[0][1]), "pending": _enabled(mig[1][1])}) if mig[0][0] == "ok" else unsupported()
        )
        fabric = detail.get("fabric") or {}
        r["fabric"] = (
            ok({"state": fabric["state"].lower().replace(" ", "_"), "status": fabric.get("status")})
            if "state" in fabric
            else unsupported()
        )
        gpus.append(
            {"index": int(row["index"]), "uuid": row["uuid"], "name": row["name"], "pci_bus_id": bus, "readings": r}
        )
    return gpus


_DETAIL_RES = (
    ("slowdown_c", re.compile(r"^GPU Slowdown Temp\s*:\s*(-?\d+) C")),
    ("shutdown_c", re.compile(r"^GPU Shutdown Temp\s*:\s*(-?\d+) C")),
    ("tlimit_margin_c", re.compile(r"^GPU T\.Limit Temp\s*:\s*(-?\d+) C")),
    ("slowdown_margin_c", re.compile(r"^GPU Slowdown T\.Limit Temp\s*:\s*(-?\d+) C")),
    ("shutdown_margin_c", re.compile(r"^GPU Shutdown T\.Limit Temp\s*:\s*(-?\d+) C")),
    ("replays", re.compile(r"^Replays Since Reset\s*:\s*(\d+)")),
)
_HISTOGRAM_RE = re.compile(r"^(Max|High|Partial|Low|None)\s*:\s*(\d+) bank")
_FABRIC_RE = re.compile(r"^(State|Status)\s*:\s*(.+)$")
# The remapper's counters in -q, by the name the readings give them ("Inactive ..." lines do not match).
_REMAP_RE = re.compile(r"^(Correctable Error|Uncorrectable Error|Pending|Remapping Failure Occurred)\s*:\s*(.+)$")
_REMAP_KEYS = {
    "Correctable Error": "correctable",
    "Uncorrectable Error": "uncorrectable",
    "Pending": "pending",
    "Remapping Failure Occurred": "failure",
}
_DRIVER_RE = re.compile(r"^Driver Version\s*:\s*(\S+)")


def parse_smi_details(text: str) -> Dict[str, Json]:
    """``nvidia-smi -q`` -> bus -> what the CSV query lacks: temperature thresholds (absolute on older
    drivers, T.Limit margins on newer ones), the PCIe replay counter, the row remapper's counters (raw
    text) and histogram, and the fabric state (None where the driver says N/A)."""
    out: Dict[str, Json] = {}
    current: Optional[Json] = None
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if raw.startswith("GPU "):
            current = out.setdefault(bus_key(raw[4:]), {"histogram": {}, "fabric": {}, "remap": {}})
            continue
        if current is None or not line:
            continue
        if raw.startswith("    ") and not raw.startswith("        "):
            section = line
        for key, pattern in _DETAIL_RES:
            match = pattern.match(line)
            if match:
                current[key] = int(match.group(1))
        match = _HISTOGRAM_RE.match(line)
        if match and section == "Remapped Rows":
            current["histogram"][match.group(1).lower()] = int(match.group(2))
        match = _REMAP_RE.match(line)
        if match and section == "Remapped Rows":
            current["remap"][_REMAP_KEYS[match.group(1)]] = match.group(2).strip()
        match = _FABRIC_RE.match(line)
        if match and section == "Fabric" and _smi_value(match.group(2))[0] == "ok":
            current["fabric"][match.group(1).lower()] = match.group(2).strip()
    return out


def smi_driver_version(text: str) -> str:
    """The driver version at the head of ``nvidia-smi -q`` ("" where it is missing)."""
    for line in text.splitlines():
        match = _DRIVER_RE.match(line.strip())
        if match:
            return match.group(1)
    return ""


def from_smi(smi: str) -> Json:
    # Two calls, not one per kind of reading: without persistence mode every nvidia-smi call initialises
    # the driver on every GPU (seconds on 8 GPUs); -q holds what the CSV query cannot ask for.
    fields = ",".join(SMI_FIELDS)
    code, query, err = _run([smi, "--query-gpu=" + fields, "--format=csv,noheader,nounits"])
    if code != 0:
        raise RuntimeError("nvidia-smi --query-gpu failed: %s" % (err.strip() or query.strip())[:200])
    _, full, _ = _run([smi, "-q"])
    return {
        "source": "nvidia-smi",
        "driver_version": smi_driver_version(full),
        "gpus": parse_smi(query, parse_smi_details(full)),
        "xid_watch": {"seconds": 0, "events": {}},
    }


# ------------------------------------------------------------------------------------------ kernel log


def parse_xids(text: str) -> Dict[str, List[Json]]:
    """Kernel log lines -> bus -> [{"xid": 79, "message": "..."}] (the NVRM Xid lines since boot)."""
    out: Dict[str, List[Json]] = {}
    for line in text.splitlines():
        match = XID_RE.search(line)
        if match:
            bus, xid, message = match.groups()
            out.setdefault(bus_key(bus), []).append({"xid": int(xid), "message": (message or "").strip()[:200]})
    return out


def kernel_xids() -> Json:
    """Xid lines in the kernel log since boot: journalctl -k -b, else dmesg."""
    for argv in (["journalctl", "-k", "-b", "--no-pager", "-q", "-g", "NVRM: Xid"], ["dmesg"]):
        if shutil.which(argv[0], path=EXTRA_BIN_DIRS) is None:
            continue
        code, out, _ = _run(argv)
        if code in (0, 1):  # journalctl -g exits 1 when nothing matches
            return ok(parse_xids(out))
    return unsupported()


# ------------------------------------------------------------------------------------------------ main


def dcgm_diag(level: int) -> Json:
    """``dcgmi diag -r LEVEL`` where DCGM is installed: its exit status is the verdict (0 passed), its last
    lines the detail. Level 0 or no dcgmi: unsupported."""
    dcgmi = shutil.which("dcgmi", path=EXTRA_BIN_DIRS)
    if level <= 0 or dcgmi is None:
        return unsupported()
    try:
        done = subprocess.run(
            [dcgmi, "diag", "-r", str(level)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            universal_newlines=True,
            timeout=DCGM_TIMEOUT_S[level],
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return error("dcgmi diag -r %d: %s" % (level, err))
    tail = [line.strip() for line in done.stdout.splitlines() if line.strip()][-12:]
    return ok({"level": level, "passed": done.returncode == 0, "exit": done.returncode, "output_tail": tail})


def read_all(source: str, watch_s: float, dcgm_level: int = 0) -> Json:
    errors: List[str] = []
    report: Optional[Json] = None
    if source in ("auto", "nvml"):
        try:
            report = from_nvml(watch_s)
        except Exception as err:
            errors.append("nvml: %s" % err)
            if source == "nvml":
                report = None
    smi = shutil.which("nvidia-smi", path=EXTRA_BIN_DIRS)
    if report is None and source in ("auto", "nvidia-smi") and smi:
        try:
            report = from_smi(smi)
        except Exception as err:
            errors.append("nvidia-smi: %s" % err)
    if report is None:
        report = {"source": None, "driver_version": None, "gpus": [], "xid_watch": {"seconds": 0, "events": {}}}
    report["schema"] = SCHEMA_VERSION
    report["kernel_xids"] = kernel_xids()
    report["dcgm"] = dcgm_diag(dcgm_level)
    report["errors"] = errors
    return report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("auto", "nvml", "nvidia-smi"), default="auto")
    parser.add_argument("--watch-s", type=float, default=0.0, help="watch NVML Xid events and PCIe replays this long")
    parser.add_argument("--dcgm-level", type=int, choices=(0, 1, 2, 3), default=0, help="run dcgmi diag -r N (0: no)")
    # One line by default: the converged check reads it on every run of every host (indented, ~1000 lines of
    # 8 GPUs crossed the connection and the controller's line handling, per host).
    parser.add_argument("--indent", type=int, default=None, help="pretty-print the JSON")
    parser.add_argument("--output", help="write the JSON to this file (replaced whole: readers see old or new)")
    args = parser.parse_args(argv)
    text = json.dumps(read_all(args.source, args.watch_s, args.dcgm_level), indent=args.indent, sort_keys=True)
    if args.output is None:
        sys.stdout.write(text + "\n")
    else:
        replace_file(args.output, text + "\n")
    return 0


def replace_file(path: str, text: str) -> None:
    """``path`` holds ``text`` (mode 0644: GPU readings are no secret), swapped in by one rename."""
    partial = "%s.%d.partial" % (path, os.getpid())
    try:
        with open(partial, "w") as out:
            out.write(text)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


if __name__ == "__main__":
    sys.exit(main())
