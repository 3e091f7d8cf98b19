"""The sim's runtime Xid switch, off a sim host: its nvidia-smi shows what the driver shows after the Xid
(79: the GPU gone from the listings; 48: one more uncorrectable ECC error), and the core's rules exclude
that GPU, so ``ms4fleet health --drain`` has something true to act on in the sim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.health import exclusions, parse_health
from ms4fleet.hostside import health as reader
from ms4fleet_sim import profiles
from ms4fleet_sim.nvsim import smi, state


@pytest.fixture
def sim_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """nvidia-smi's inputs as on a sim host with 2 x H200 and the 580 driver loaded; returns the faults."""
    driver = tmp_path / "driver.json"
    driver.write_text(json.dumps({"version": "580.95.05", "cuda_version": "13.0"}))
    monkeypatch.setattr(smi, "DRIVER_INFO", driver)
    monkeypatch.setattr(smi, "PERSISTENCE", tmp_path / "persistence.json")
    monkeypatch.setattr(state, "loaded_module", lambda: {"version": "580.95.05", "flavor": "open"})
    profile = profiles.render_profile("sim-1", profiles.parse_gpu_spec("h200x2"))
    monkeypatch.setattr(state, "profile", lambda: profile)
    monkeypatch.setattr(state, "live_procs", lambda prune=True: {})
    faults: dict[str, Any] = {}
    monkeypatch.setattr(state, "faults", lambda path=state.FAULTS: faults)
    return faults


def test_xid_79_takes_the_gpu_off_every_listing(sim_host: dict[str, Any]) -> None:
    assert smi.run(["-L"]).count("GPU ") == 2
    sim_host["gpu_health"] = {"1": {"xid": 79}}
    assert smi.run(["-L"]).startswith("GPU 0: ") and smi.run(["-L"]).count("GPU ") == 1
    rows = smi.run(["--query-gpu=index,pci.bus_id", "--format=csv,noheader"]).strip().splitlines()
    assert [row.split(",")[0] for row in rows] == ["0"]


def test_xid_48_counts_one_uncorrectable_ecc_error(sim_host: dict[str, Any]) -> None:
    sim_host["gpu_health"] = {"0": {"xid": 48}}
    query = ["--query-gpu=index,ecc.errors.uncorrected.volatile.total", "--format=csv,noheader,nounits"]
    assert [r.replace(" ", "") for r in smi.run(query).strip().splitlines()] == ["0,1", "1,0"]


def test_the_readers_smi_path_and_the_core_exclude_the_gpu(
    sim_host: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_run(argv: list[str]) -> tuple[int, str, str]:
        return 0, smi.run(argv[1:]), ""

    monkeypatch.setattr(reader, "_run", fake_run)
    sim_host["gpu_health"] = {"0": {"xid": 48}, "1": {"xid": 79}}
    report = parse_health(json.dumps(reader.from_smi("nvidia-smi")), "sim-1")
    assert [(e.gpu, e.reason) for e in exclusions(report, 2)] == [
        (0, "unhealthy: 1 uncorrectable ECC error(s) since the last reset"),
        (1, "not listed by nvidia-smi (1 of 2 GPUs answered)"),
    ]
