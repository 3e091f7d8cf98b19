"""The probe's NVML path against a stand-in ``pynvml`` module shaped like nvidia-ml-py 13.x (the real
GPU run is replayed in test_h200_replay.py; this one covers reserved memory, MIG, processes, errors)."""

from __future__ import annotations

import ctypes
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from ms4fleet.hostside import probe

GIB = 1024**3


class NVMLError(Exception):
    pass


class FabricInfo(ctypes.Structure):
    _fields_ = [("state", ctypes.c_uint)]


def _struct(**fields: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(**fields)


def fake_pynvml(*, mig: bool = False, v2: bool = True) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    total, reserved = 150754820096, 644939776
    held = {0: [(4242, 100 * GIB)]}

    def memory(handle: int, version: int | None = None) -> types.SimpleNamespace:
        used = sum(size for _, size in held.get(handle, []))
        if version:
            if not v2:
                raise NVMLError("Function Not Found")
            return _struct(total=total, reserved=reserved, used=used, free=total - reserved - used)
        return _struct(total=total, used=used + reserved, free=total - reserved - used)

    def not_supported(*_: Any) -> Any:
        raise NVMLError("Not Supported")

    module.__dict__.update(
        nvmlMemory_v2=0x02000028,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: "580.159.04",
        nvmlSystemGetCudaDriverVersion=lambda: 13000,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda index: index,
        nvmlDeviceGetName=lambda handle: b"NVIDIA H200",
        nvmlDeviceGetUUID=lambda handle: f"GPU-0000000{handle}-aaaa-bbbb-cccc-dddddddddddd",
        nvmlDeviceGetPciInfo=lambda handle: _struct(busId=f"00000000:0{6 + handle}:00.0", pciDeviceId=0x233510DE),
        nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetCudaComputeCapability=lambda handle: (9, 0),
        nvmlDeviceGetMigMode=lambda handle: [1 if mig and handle == 1 else 0, 0],
        nvmlDeviceGetEccMode=lambda handle: [1, 1],
        nvmlDeviceGetPersistenceMode=lambda handle: 1,
        nvmlDeviceGetComputeRunningProcesses=lambda handle: [
            _struct(pid=pid, usedGpuMemory=size) for pid, size in held.get(handle, [])
        ],
        nvmlDeviceGetMaxMigDeviceCount=lambda handle: 2,
        nvmlDeviceGetMigDeviceHandleByIndex=lambda handle, slot: 100 + slot if slot == 0 else not_supported(),
        nvmlDeviceGetGpuInstanceId=lambda mig: 3,
        nvmlDeviceGetComputeInstanceId=lambda mig: 0,
        c_nvmlGpuFabricInfo_t=FabricInfo,
        nvmlDeviceGetGpuFabricInfo=not_supported,
    )
    return module


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    yield


def test_nvml_reports_exact_bytes_and_reserved_memory(nvml: None) -> None:
    errors: list[str] = []
    data = probe.collect_nvml(errors)
    assert errors == []
    assert data["driver_version"] == "580.159.04"
    assert data["cuda_driver_version"] == "13.0"
    first = data["gpus"][0]
    assert first == {
        "index": 0,
        "uuid": "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd",
        "name": "NVIDIA H200",
        "pci_bus_id": "0000:06:00.0",
        "pci_device_id": "0x2335",
        "memory_total_bytes": 150754820096,
        "memory_reserved_bytes": 644939776,
        "memory_used_bytes": 100 * GIB,
        "memory_free_bytes": 150754820096 - 644939776 - 100 * GIB,
        "compute_capability": "9.0",
        "mig_mode": "disabled",
        "ecc_enabled": True,
        "persistence_mode": True,
    }
    assert data["processes"] == [
        {"pid": 4242, "gpu_index": 0, "gpu_uuid": first["uuid"], "used_bytes": 100 * GIB, "name": None}
    ]


def test_nvml_v1_memory_fallback_has_no_reserved_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(v2=False))
    gpu = probe.collect_nvml([])["gpus"][1]
    # v1 folds the driver's reservation into "used": reserved is unknown, used is not zero on an idle GPU.
    assert gpu["memory_reserved_bytes"] is None
    assert gpu["memory_used_bytes"] == 644939776


def test_nvml_lists_mig_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(mig=True))
    data = probe.collect_nvml([])
    assert data["gpus"][1]["mig_mode"] == "enabled"
    assert [(m["gpu_index"], m["gpu_instance_id"], m["mig_device"]) for m in data["mig_devices"]] == [(1, 3, 0)]


def test_probe_prefers_nvml_and_records_the_source(nvml: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        probe,
        "process_owner",
        lambda pid: {"systemd_unit": "ms4fleet-vllm@0.service", "container_id": None, "comm": "python3"},
    )
    report = probe.probe("auto")
    assert report["source"] == "nvml"
    assert report["schema"] == probe.SCHEMA_VERSION
    (proc,) = report["processes"]
    assert proc["systemd_unit"] == "ms4fleet-vllm@0.service" and proc["name"] == "python3"


def test_forced_nvml_without_pynvml_fails_with_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert probe.main(["--source", "nvml"]) == 1
    out = capsys.readouterr().out
    assert '"source": "none"' in out and "nvml: ModuleNotFoundError" in out
