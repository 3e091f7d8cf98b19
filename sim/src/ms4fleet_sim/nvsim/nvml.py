"""``pynvml`` (nvidia-ml-py) of a sim host: the simulated NVML, answering from the same state as ``smi``.

A sim host has nvidia-ml-py installed (``hostfiles.PYNVML``: ``import pynvml`` loads this module), so the
core's host-side readers (``ms4fleet/hostside/probe.py``, ``health.py``) take their NVML path there, in
their own Python process, as on a production host with nvidia-ml-py. The "library" is the simulated
driver's: ``nvmlInit`` fails as NVML does when the driver package is missing, no module is loaded or the
two differ, and every value comes from ``smi.Snapshot`` (profile, fault switches, process registry), so
NVML and ``nvidia-smi`` always agree. Only the calls those readers make exist. NVLink link states are not
simulated (NotSupported, as the sim's ``nvidia-smi`` leaves them out); ``nvmlEventSetWait`` delivers no
event (runtime Xids show in the counters and listings, see ``smi.ECC_XIDS``).
"""

from __future__ import annotations

import ctypes
import time
from typing import Any, NamedTuple

# nvml.h's constants the readers pass.
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
NVML_TEMPERATURE_GPU = 0
NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0
NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
nvmlEventTypeXidCriticalError = 0x8
# pynvml passes this as ``version=`` to ask for the v2 memory info (with the driver's reservation).
nvmlMemory_v2 = 0x02000028
# nvmlGpuFabricState_t
_FABRIC_STATES = {"Not Started": 1, "In Progress": 2, "Completed": 3}
# What the sim's nvidia-smi -q says of the temperature limits and power (smi.full_query, smi.gpu_field).
SHUTDOWN_C, SLOWDOWN_C = 95, 89
POWER_DRAW_MW, POWER_LIMIT_MW = 72_500, 700_000


class NVMLError(Exception):
    """pynvml's base error; ``str()`` is NVML's error string, as pynvml's is."""

    value = 999
    message = "Unknown Error"

    def __str__(self) -> str:
        return self.message


def _error(name: str, value: int, message: str) -> type[NVMLError]:
    return type(name, (NVMLError,), {"value": value, "message": message})


NVMLError_Uninitialized = _error("NVMLError_Uninitialized", 1, "Uninitialized")
NVMLError_InvalidArgument = _error("NVMLError_InvalidArgument", 2, "Invalid Argument")
NVMLError_NotSupported = _error("NVMLError_NotSupported", 3, "Not Supported")
NVMLError_NotFound = _error("NVMLError_NotFound", 6, "Not Found")
NVMLError_DriverNotLoaded = _error("NVMLError_DriverNotLoaded", 9, "Driver Not Loaded")
NVMLError_Timeout = _error("NVMLError_Timeout", 10, "Timeout")
NVMLError_GpuIsLost = _error("NVMLError_GpuIsLost", 15, "GPU is lost")
NVMLError_LibraryNotFound = _error("NVMLError_LibraryNotFound", 12, "NVML Shared Library Not Found")
NVMLError_LibRmVersionMismatch = _error(
    "NVMLError_LibRmVersionMismatch", 18, "RM has detected an NVML/RM version mismatch."
)
NVMLError_Unknown = _error("NVMLError_Unknown", 999, "Unknown Error")


class c_nvmlGpuFabricInfo_t(ctypes.Structure):
    _fields_ = [
        ("clusterUuid", ctypes.c_char * 16),
        ("status", ctypes.c_uint),
        ("cliqueId", ctypes.c_uint32),
        ("state", ctypes.c_uint8),
    ]


class _Handle(NamedTuple):
    position: int
    gpu: dict[str, Any]


class _PciInfo(NamedTuple):
    busId: str
    pciDeviceId: int


class _Memory(NamedTuple):
    total: int
    reserved: int
    used: int
    free: int


class _Process(NamedTuple):
    pid: int
    usedGpuMemory: int


class _Histogram(NamedTuple):
    max: int
    high: int
    partial: int
    low: int
    none: int


_snapshot: Any = None


def _snap() -> Any:
    if _snapshot is None:
        raise NVMLError_Uninitialized()
    return _snapshot


def nvmlInit() -> None:
    """Reads the simulated driver once, as ``nvidia-smi`` does per call; fails where NVML would."""
    global _snapshot
    try:
        from ms4fleet_sim.nvsim import smi  # the driver package's side: absent until it is installed
    except ImportError as err:
        raise NVMLError_LibraryNotFound() from err
    if not smi.DRIVER_INFO.exists():
        raise NVMLError_LibraryNotFound()
    try:
        _snapshot = smi.Snapshot()
    except smi.SmiError as err:
        raise (NVMLError_DriverNotLoaded() if err.code == 9 else NVMLError_LibRmVersionMismatch()) from err
    # Unknown fault switches fail every call of nvidia-smi; NVML fails its initialisation.
    for gpu in _snapshot.profile["gpus"]:
        try:
            _snapshot.health(int(gpu["index"]))
        except smi.SmiError as err:
            _snapshot = None
            raise NVMLError_Unknown() from err


def nvmlShutdown() -> None:
    global _snapshot
    _snapshot = None


def nvmlSystemGetDriverVersion() -> str:
    return str(_snap().driver["version"])


def nvmlSystemGetCudaDriverVersion() -> int:
    major, _, minor = str(_snap().driver["cuda_version"]).partition(".")
    return int(major) * 1000 + int(minor or 0) * 10


def nvmlDeviceGetCount() -> int:
    return len(_snap().profile["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    snap = _snap()
    gpus = snap.profile["gpus"]
    if not 0 <= index < len(gpus):
        raise NVMLError_InvalidArgument()
    # A GPU that fell off the bus (Xid 79) is still counted but answers nothing (nvidia-smi drops it).
    if gpus[index] not in snap.gpus:
        raise NVMLError_GpuIsLost()
    return _Handle(index, gpus[index])


def _health(handle: _Handle) -> dict[str, Any]:
    values: dict[str, Any] = _snap().health(int(handle.gpu["index"]))
    return values


def nvmlDeviceGetUUID(handle: _Handle) -> str:
    return str(handle.gpu["uuid"])


def nvmlDeviceGetName(handle: _Handle) -> str:
    return str(_snap().profile["name"])


def nvmlDeviceGetPciInfo(handle: _Handle) -> _PciInfo:
    device = int(str(_snap().profile["pci_device_id"]), 16)
    return _PciInfo(busId=str(handle.gpu["pci_bus_id"]), pciDeviceId=(device << 16) | 0x10DE)


def nvmlDeviceGetMemoryInfo(handle: _Handle, version: int | None = None) -> _Memory:
    snap = _snap()
    index = int(handle.gpu["index"])
    used = snap.used(index)
    if version == nvmlMemory_v2:
        return _Memory(total=snap.total, reserved=snap.reserved, used=used, free=snap.free(index))
    # v1 counts the driver's reservation as used (what a real H200 reports).
    return _Memory(total=snap.total, reserved=0, used=used + snap.reserved, free=snap.free(index))


def nvmlDeviceGetCudaComputeCapability(handle: _Handle) -> tuple[int, int]:
    major, _, minor = str(_snap().profile["compute_capability"]).partition(".")
    return int(major), int(minor or 0)


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[_Process]:
    index = int(handle.gpu["index"])
    return [_Process(int(p["pid"]), amount) for p, g, amount in _snap().apps() if int(g["index"]) == index]


def nvmlDeviceGetMigMode(handle: _Handle) -> tuple[int, int]:
    on = int(bool(_health(handle)["mig"]))
    return on, on


def nvmlDeviceGetMaxMigDeviceCount(handle: _Handle) -> int:
    return 0  # MIG instances are not simulated: the MIG switch only says the mode is on


def nvmlDeviceGetEccMode(handle: _Handle) -> tuple[int, int]:
    on = int(bool(_health(handle)["ecc_mode"]))
    return on, on


def nvmlDeviceGetPersistenceMode(handle: _Handle) -> int:
    return int(_snap().persistence)


def nvmlDeviceGetTotalEccErrors(handle: _Handle, error_type: int, counter: int) -> int:
    kind = "uncorrected" if error_type == NVML_MEMORY_ERROR_TYPE_UNCORRECTED else "corrected"
    scope = "aggregate" if counter == NVML_AGGREGATE_ECC else "volatile"
    return int(_health(handle)[f"ecc_{kind}_{scope}"])


def nvmlDeviceGetRetiredPagesPendingStatus(handle: _Handle) -> int:
    raise NVMLError_NotSupported()  # Hopper replaced page retirement with row remapping


def nvmlDeviceGetRetiredPages(handle: _Handle, cause: int) -> list[int]:
    raise NVMLError_NotSupported()


def nvmlDeviceGetRemappedRows(handle: _Handle) -> tuple[int, int, int, int]:
    h = _health(handle)
    return (
        int(h["row_remap_correctable"]),
        int(h["row_remap_uncorrectable"]),
        int(bool(h["row_remap_pending"])),
        int(bool(h["row_remap_failure"])),
    )


def nvmlDeviceGetRowRemapperHistogram(handle: _Handle) -> _Histogram:
    none = int(_health(handle)["banks_without_spare_rows"])
    return _Histogram(max=3072 - none, high=0, partial=0, low=0, none=none)


def nvmlDeviceGetCurrPcieLinkGeneration(handle: _Handle) -> int:
    return int(_health(handle)["pcie_gen"])


def nvmlDeviceGetGpuMaxPcieLinkGeneration(handle: _Handle) -> int:
    return 5


def nvmlDeviceGetCurrPcieLinkWidth(handle: _Handle) -> int:
    return int(_health(handle)["pcie_width"])


def nvmlDeviceGetMaxPcieLinkWidth(handle: _Handle) -> int:
    return 16


def nvmlDeviceGetPcieReplayCounter(handle: _Handle) -> int:
    return int(_health(handle)["pcie_replays"])


def nvmlDeviceGetNvLinkState(handle: _Handle, link: int) -> int:
    raise NVMLError_NotSupported()


def nvmlDeviceGetCurrentClocksEventReasons(handle: _Handle) -> int:
    return int(_health(handle)["clocks_event_reasons"])


nvmlDeviceGetCurrentClocksThrottleReasons = nvmlDeviceGetCurrentClocksEventReasons


def nvmlDeviceGetTemperature(handle: _Handle, sensor: int) -> int:
    return int(_health(handle)["temperature_c"])


def nvmlDeviceGetTemperatureThreshold(handle: _Handle, which: int) -> int:
    if which == NVML_TEMPERATURE_THRESHOLD_SHUTDOWN:
        return SHUTDOWN_C
    if which == NVML_TEMPERATURE_THRESHOLD_SLOWDOWN:
        return SLOWDOWN_C
    raise NVMLError_NotSupported()


def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
    return POWER_DRAW_MW


def nvmlDeviceGetEnforcedPowerLimit(handle: _Handle) -> int:
    return POWER_LIMIT_MW


def nvmlDeviceGetGpuFabricInfo(handle: _Handle, info: Any) -> int:
    """Fills the ``c_nvmlGpuFabricInfo_t`` passed by reference (state 0, not supported, without NVSwitch);
    returns NVML_SUCCESS as pynvml does."""
    out = info._obj  # ctypes.byref(struct)
    out.state = _FABRIC_STATES.get(str(_health(handle)["fabric_state"]), 0) if _snap().nvswitch else 0
    out.status = 0
    return 0


def nvmlEventSetCreate() -> list[int]:
    return []


def nvmlDeviceRegisterEvents(handle: _Handle, event_types: int, event_set: list[int]) -> None:
    event_set.append(handle.position)


def nvmlEventSetWait(event_set: list[int], timeout_ms: int) -> Any:
    time.sleep(timeout_ms / 1000.0)
    raise NVMLError_Timeout()


def nvmlEventSetFree(event_set: list[int]) -> None:
    event_set.clear()
