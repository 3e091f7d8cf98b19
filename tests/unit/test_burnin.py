"""The burn-in's verdict: busbw against the catalog's interconnect figure, the slow pair named; the sim's
all-reduce (slowed per pair by a fault switch) judged by the core like a real run."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.burnin import MIN_FRACTION, expected, judge
from ms4fleet.catalog import gpu_kinds
from ms4fleet_sim.nvsim import allreduce, state
from ms4fleet_sim.profiles import GpuSpec, render_profile

H200 = Path(__file__).parents[1] / "data" / "h200" / "health"


def test_the_interconnect_and_its_figure_come_from_the_catalog() -> None:
    kinds = gpu_kinds()
    assert expected(kinds["h200-sxm"], 8) == ("nvswitch", 450.0)
    assert expected(kinds["h100-sxm"], 4) == ("nvlink", 450.0)
    assert expected(kinds["b200"], 8) == ("nvswitch", 900.0)
    assert expected(kinds["h200-nvl"], 2) == ("pcie", 64.0)


def sim_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gpus: str, faults: dict[str, Any]) -> dict[str, Any]:
    """The sim's all-reduce tool as a sim host runs it, on an 8 x H200 profile with ``faults``."""
    profile = render_profile("sim-1", GpuSpec("h200-sxm", 8))
    (tmp_path / "faults.json").write_text(json.dumps(faults))
    monkeypatch.setattr(state, "FAULTS", tmp_path / "faults.json")
    monkeypatch.setattr(state, "profile", lambda: profile)
    monkeypatch.setattr(state, "loaded_module", lambda: {"version": "580.95.05", "flavor": "open"})
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    assert allreduce.main(["--gpus", gpus, "--pairs"]) == 0
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def test_a_healthy_sim_group_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result = sim_run(monkeypatch, tmp_path, "0,1,2,3", {})
    verdict = judge("sim-1", gpu_kinds()["h200-sxm"], 8, result)
    assert verdict.ok and verdict.busbw_gb_s == 360.0 and verdict.interconnect == "nvswitch"
    assert [p["gpus"] for p in result["pairs"]] == [[0, 1], [1, 2], [2, 3], [3, 0]]


def test_one_slowed_pair_slows_its_group_and_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result = sim_run(monkeypatch, tmp_path, "0,1,2,3", {"allreduce": {"slow_pairs": {"3-2": 0.25}}})
    verdict = judge("sim-1", gpu_kinds()["h200-sxm"], 8, result)
    assert not verdict.ok
    assert verdict.degraded_pairs == ((2, 3),)
    assert verdict.busbw_gb_s == 90.0 < MIN_FRACTION * 450
    assert verdict.reason == (
        "busbw 90 GB/s on GPUs 0,1,2,3 is below 225 (50% of the 450 GB/s nvswitch figure): "
        "degraded pair(s): GPUs 2,3 at 90 GB/s"
    )
    # The other TP groups of the host do not cross that link.
    assert judge("sim-1", gpu_kinds()["h200-sxm"], 8, sim_run(monkeypatch, tmp_path, "4,5,6,7", {})).ok


def test_a_failed_or_single_rank_run(monkeypatch: pytest.MonkeyPatch) -> None:
    h200 = gpu_kinds()["h200-sxm"]
    single = json.loads((H200 / "burnin-1gpu.json").read_text().splitlines()[-1])
    verdict = judge("h200", h200, 1, single)
    assert verdict.ok and verdict.reason == "single GPU: NCCL and CUDA work"
    failed = {"gpus": [0, 1], "busbw_gb_s": 0.0, "correct": False, "failed_gpus": [1]}
    assert judge("h", h200, 8, failed).reason == "all-reduce on GPUs 0,1 failed (GPUs 1)"
