"""The sim's ``pynvml`` (``ms4fleet_sim.nvsim.nvml``) against the sim's ``nvidia-smi``, off a sim host: the
core's readers see the same GPUs through both (the health reader's readings and verdicts, the probe's
memory figures and processes), for every GPU fault switch, so a sim host taking the NVML path is judged as
one taking the nvidia-smi fallback; NVML fails where the real library does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.health import exclusions, parse_health
from ms4fleet.hostside import health as reader
from ms4fleet.hostside import probe
from ms4fleet_sim import hostfiles, profiles
from ms4fleet_sim.nvsim import nvml, smi, state
from tests.sim.test_gpu_health_engines import SWITCHES

GIB = 1024**3
# Readings only one source has: the fabric status (NVML's number, nvidia-smi's word).
ONLY_ONE_SOURCE = ("fabric",)


@pytest.fixture
def sim_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A sim host's GPU state with 2 x H200 and the 580 driver loaded, ``pynvml`` importable; returns the
    faults (``procs`` under the key ``"procs"``)."""
    driver = tmp_path / "driver.json"
    driver.write_text(json.dumps({"version": "580.95.05", "cuda_version": "13.0"}))
    monkeypatch.setattr(smi, "DRIVER_INFO", driver)
    monkeypatch.setattr(smi, "PERSISTENCE", tmp_path / "persistence.json")
    smi.PERSISTENCE.write_text('{"enabled": true}')  # as the deploy leaves it
    monkeypatch.setattr(state, "loaded_module", lambda: {"version": "580.95.05", "flavor": "open"})
    profile = profiles.render_profile("sim-1", profiles.parse_gpu_spec("h200x2"))
    monkeypatch.setattr(state, "profile", lambda: profile)
    procs: dict[str, Any] = {}
    monkeypatch.setattr(state, "live_procs", lambda prune=True: procs)
    faults: dict[str, Any] = {"procs": procs}
    monkeypatch.setattr(state, "faults", lambda path=state.FAULTS: faults)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)

    def fake_run(argv: list[str]) -> tuple[int, str, str]:
        return 0, smi.run(argv[1:]), ""

    monkeypatch.setattr(reader, "_run", fake_run)
    monkeypatch.setattr(reader, "kernel_xids", lambda: reader.ok({}))
    monkeypatch.setattr(reader.shutil, "which", lambda name, path=None: "nvidia-smi" if name == "nvidia-smi" else None)
    return faults


def _both(sim_host: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return reader.read_all("nvml", 0.0), reader.from_smi("nvidia-smi")


def _known(reading: dict[str, Any]) -> dict[str, Any]:
    """A reading without the fields its source leaves unknown (nvidia-smi's -q has the margin temperatures)."""
    value = reading.get("value")
    if isinstance(value, dict):
        return {**reading, "value": {k: v for k, v in value.items() if v is not None}}
    return reading


def _readings(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**gpu, "readings": {k: _known(v) for k, v in gpu["readings"].items() if k not in ONLY_ONE_SOURCE}}
        for gpu in report["gpus"]
    ]


@pytest.mark.parametrize(("switch", "verdict", "reason"), [({}, "healthy", None), *SWITCHES])
def test_nvml_and_nvidia_smi_read_and_judge_every_switch_alike(
    sim_host: dict[str, Any], switch: dict[str, Any], verdict: str, reason: str | None
) -> None:
    sim_host["gpu_health"] = {"1": switch}
    by_nvml, by_smi = _both(sim_host)
    assert by_nvml["source"] == "nvml" and by_nvml["errors"] == []
    assert by_nvml["driver_version"] == by_smi["driver_version"] == "580.95.05"
    assert _readings(by_nvml) == _readings(by_smi)
    judged = [parse_health(json.dumps(r), "sim-1") for r in (by_nvml, by_smi)]
    got = [[(g.index, g.verdict.name.lower(), [f.reason for f in g.findings]) for g in r.gpus] for r in judged]
    assert got[0] == got[1] == [(0, "healthy", []), (1, verdict, [reason] if reason else [])]


def test_a_gpu_off_the_bus_fails_nvml_and_the_reader_falls_back_to_nvidia_smi(sim_host: dict[str, Any]) -> None:
    sim_host["gpu_health"] = {"1": {"xid": 79}}
    report = reader.read_all("auto", 0.0)
    assert report["source"] == "nvidia-smi" and report["errors"] == ["nvml: GPU is lost"]
    assert [(e.gpu, e.reason) for e in exclusions(parse_health(json.dumps(report), "sim-1"), 2)] == [
        (1, "not listed by nvidia-smi (1 of 2 GPUs answered)")
    ]


def test_nvml_fails_where_the_library_does(sim_host: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "loaded_module", lambda: {"version": "580.82.07", "flavor": "open"})
    with pytest.raises(nvml.NVMLError_LibRmVersionMismatch):
        nvml.nvmlInit()
    monkeypatch.setattr(state, "loaded_module", lambda: None)
    with pytest.raises(nvml.NVMLError_DriverNotLoaded):
        nvml.nvmlInit()
    monkeypatch.setattr(smi, "DRIVER_INFO", Path("/nonexistent/driver.json"))
    with pytest.raises(nvml.NVMLError_LibraryNotFound):
        nvml.nvmlInit()
    with pytest.raises(nvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()


def test_the_probe_sees_the_same_memory_and_processes_through_nvml(sim_host: dict[str, Any]) -> None:
    sim_host["procs"]["replica"] = {
        "pid": 4242,
        "name": "vllm",
        "container_id": None,
        "gpu_memory_bytes": {"0": 100 * GIB},
    }
    errors: list[str] = []
    by_nvml = probe.collect_nvml(errors)
    assert errors == []
    rows = smi.run(
        ["--query-gpu=index,memory.total,memory.reserved,memory.used,memory.free", "--format=csv,noheader,nounits"]
    )
    mib = [[int(c) for c in row.split(",")[1:]] for row in rows.strip().splitlines()]
    got = [
        [g[k] // (1024 * 1024) for k in ("memory_total_bytes", "memory_reserved_bytes", "memory_used_bytes")]
        for g in by_nvml["gpus"]
    ]
    assert got == [row[:3] for row in mib] and mib[0][2] == 100 * 1024
    assert [g["memory_free_bytes"] // (1024 * 1024) for g in by_nvml["gpus"]] == [row[3] for row in mib]
    assert [(p["pid"], p["gpu_index"], p["used_bytes"]) for p in by_nvml["processes"]] == [(4242, 0, 100 * GIB)]
    assert by_nvml["driver_version"] == "580.95.05" and by_nvml["cuda_driver_version"] == "13.0"
    assert [g["compute_capability"] for g in by_nvml["gpus"]] == ["9.0", "9.0"]
    assert by_nvml["nvml_fabric_states"] == ["not-supported", "not-supported"]


def test_the_hosts_pynvml_is_the_sim_nvml(tmp_path: Path) -> None:
    """What a sim host gets as ``pynvml.py`` imports this module from NVSIM_ROOT's copy of the package."""
    root = tmp_path / "nvidia-sim"
    (root / "ms4fleet_sim" / "nvsim").mkdir(parents=True)
    (root / "ms4fleet_sim" / "__init__.py").write_text("")
    for name in ("__init__.py", "nvml.py"):
        (root / "ms4fleet_sim" / "nvsim" / name).write_text(hostfiles.nvsim_source(name))
    (tmp_path / "site").mkdir()
    shim = hostfiles.pynvml_module().replace(hostfiles.NVSIM_ROOT, str(root))
    (tmp_path / "site" / "pynvml.py").write_text(shim)
    code = "import pynvml; print(pynvml.NVMLError_NotSupported.__module__, pynvml.nvmlMemory_v2)"
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {code}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.split() == ["ms4fleet_sim.nvsim.nvml", str(nvml.nvmlMemory_v2)], done.stderr
    assert "nvml.py" in hostfiles.HARDWARE_MODULES and hostfiles.PYNVML.endswith("/dist-packages/pynvml.py")
