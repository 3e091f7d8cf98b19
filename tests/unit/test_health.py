"""GPU health: the real H200's readings replayed (NVML and nvidia-smi), and every rule made to fire."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.health import HealthError, Verdict, judge_gpu, parse_health
from ms4fleet.hostside import health

H200 = Path(__file__).parents[1] / "data" / "h200" / "health"


def _nvml_capture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((H200 / "health-nvml.json").read_text())
    return data


def _base() -> dict[str, Any]:
    """The real capture, as the rules' starting point (a fresh copy each time)."""
    return _nvml_capture()


def test_real_h200_nvml_reading_is_healthy_with_real_values() -> None:
    report = parse_health((H200 / "health-nvml.json").read_text(), "h200")
    assert report.source == "nvml" and report.driver_version == "580.159.04"
    (gpu,) = report.gpus
    assert gpu.verdict == Verdict.HEALTHY and gpu.findings == (), gpu.findings
    assert report.usable == (0,)
    r = gpu.readings
    assert r["ecc_mode"]["value"] == {"current": True, "pending": True}
    assert r["pcie_link"]["value"] == {"gen_current": 5, "gen_max": 5, "width_current": 16, "width_max": 16}
    assert r["row_remap_histogram"]["value"]["max"] == 3072
    assert r["temperature"]["value"]["slowdown_c"] == 89 and r["temperature"]["value"]["shutdown_c"] == 95
    assert r["power"]["value"]["limit_w"] == 700.0
    assert r["pcie_replay_growth"] == {"status": "ok", "value": 0}
    # What that single-GPU VM does not answer is recorded as such, never judged.
    assert set(gpu.unsupported) == {"retired_pages", "nvlink", "fabric"}


def test_nvidia_smi_fallback_agrees_with_nvml_on_the_real_h200() -> None:
    details = health.parse_smi_details((H200 / "smi-q.txt").read_text())
    (smi,) = health.parse_smi((H200 / "smi-query.csv").read_text(), details)
    (nvml,) = _base()["gpus"]
    assert smi["pci_bus_id"] == nvml["pci_bus_id"] == "0000:00:06"
    assert smi["uuid"] == nvml["uuid"]
    for name in (
        "ecc_mode",
        "ecc_corrected_volatile",
        "ecc_uncorrected_volatile",
        "ecc_corrected_aggregate",
        "ecc_uncorrected_aggregate",
        "row_remap",
        "row_remap_histogram",
        "pcie_link",
        "pcie_replay",
        "persistence",
        "mig",
        "retired_pages",
        "nvlink",
        "fabric",
    ):
        assert smi["readings"][name] == nvml["readings"][name], name
    # This driver reports T.Limit margins in -q, not absolute thresholds.
    temperature = smi["readings"]["temperature"]["value"]
    assert temperature["slowdown_margin_c"] == -2 and temperature["shutdown_margin_c"] == -8
    assert temperature["tlimit_margin_c"] > temperature["slowdown_margin_c"]  # an idle GPU, far from its limit
    verdict = judge_gpu(smi, [], [])
    assert verdict.verdict == Verdict.HEALTHY, verdict.findings


def test_nvidia_smi_q_holds_what_the_remap_query_and_driver_query_said_on_the_real_h200() -> None:
    """The reader asks -q for the remapper's counters and the driver version (two nvidia-smi calls, not
    four): on the H200, -q said what ``--query-remapped-rows`` (captured beside it) said."""
    text = (H200 / "smi-q.txt").read_text()
    (bus, remap) = next(iter(health.parse_smi_details(text).items()))
    captured = [c.strip() for c in (H200 / "smi-remap.csv").read_text().split(",")]
    assert health.bus_key(captured[0]) == bus
    assert [remap["remap"][k] for k in ("correctable", "uncorrectable", "pending", "failure")] == captured[1:]
    assert health.smi_driver_version(text) == "580.159.04"
    assert health.smi_driver_version("No devices were found\n") == ""


def test_a_gpu_without_remapper_counters_reads_unsupported() -> None:
    text = (H200 / "smi-q.txt").read_text()
    cut = "".join(
        line for line in text.splitlines(keepends=True) if not line.strip().startswith("Remapping Failure Occurred")
    )
    (smi,) = health.parse_smi((H200 / "smi-query.csv").read_text(), health.parse_smi_details(cut))
    assert smi["readings"]["row_remap"] == {"status": "unsupported"}


def _faulty(**readings: Any) -> Verdict:
    (gpu,) = _base()["gpus"]
    for name, value in readings.items():
        gpu["readings"][name] = {"status": "ok", "value": value}
    return judge_gpu(gpu, [], []).verdict


def _with(name: str, **changes: Any) -> Any:
    (gpu,) = _base()["gpus"]
    value = copy.deepcopy(gpu["readings"][name]["value"])
    return {**value, **changes} if isinstance(value, dict) else changes["value"]


@pytest.mark.parametrize(
    ("readings", "verdict"),
    [
        ({"ecc_uncorrected_volatile": 2}, Verdict.UNHEALTHY),
        ({"ecc_uncorrected_aggregate": 3}, Verdict.DEGRADED),
        ({"ecc_mode": {"current": False, "pending": False}}, Verdict.DEGRADED),
        ({"row_remap": {"correctable": 0, "uncorrectable": 1, "pending": True, "failure": False}}, Verdict.UNHEALTHY),
        ({"row_remap": {"correctable": 0, "uncorrectable": 9, "pending": False, "failure": True}}, Verdict.UNHEALTHY),
        ({"retired_pages": {"pending": True, "single_bit": 0, "double_bit": 1}}, Verdict.UNHEALTHY),
        ({"retired_pages": {"pending": False, "single_bit": 50, "double_bit": 10}}, Verdict.DEGRADED),
        ({"pcie_link": {"gen_current": 5, "gen_max": 5, "width_current": 8, "width_max": 16}}, Verdict.DEGRADED),
        ({"pcie_replay_growth": 17}, Verdict.DEGRADED),
        ({"nvlink": [{"link": 0, "active": True}, {"link": 1, "active": False}]}, Verdict.UNHEALTHY),
        ({"clocks_event_reasons": {"mask": 0x40, "active": ["hw_thermal_slowdown"]}}, Verdict.UNHEALTHY),
        ({"clocks_event_reasons": {"mask": 0x20, "active": ["sw_thermal_slowdown"]}}, Verdict.DEGRADED),
        ({"clocks_event_reasons": {"mask": 0x4, "active": ["sw_power_cap"]}}, Verdict.HEALTHY),
        ({"persistence": False}, Verdict.DEGRADED),
        ({"mig": {"current": True, "pending": True}}, Verdict.UNHEALTHY),
        ({"fabric": {"state": "in_progress", "status": 0}}, Verdict.UNHEALTHY),
        ({"fabric": {"state": "completed", "status": 0}}, Verdict.HEALTHY),
        ({"row_remap_histogram": {"max": 3000, "high": 0, "partial": 0, "low": 0, "none": 2}}, Verdict.DEGRADED),
    ],
)
def test_each_rule_fires(readings: dict[str, Any], verdict: Verdict) -> None:
    assert _faulty(**readings) == verdict


def test_temperature_rules_use_absolute_thresholds_or_tlimit_margins() -> None:
    assert _faulty(temperature=_with("temperature", gpu_c=90)) == Verdict.DEGRADED
    assert _faulty(temperature=_with("temperature", gpu_c=95)) == Verdict.UNHEALTHY
    margins = {"gpu_c": 80, "slowdown_c": None, "shutdown_c": None, "tlimit_margin_c": -3, "slowdown_margin_c": -2}
    assert _faulty(temperature=margins) == Verdict.DEGRADED
    assert _faulty(temperature={**margins, "tlimit_margin_c": 10}) == Verdict.HEALTHY


def test_pcie_generation_below_max_counts_only_on_a_busy_gpu() -> None:
    low_gen = {"gen_current": 1, "gen_max": 5, "width_current": 16, "width_max": 16}
    assert _faulty(pcie_link=low_gen) == Verdict.HEALTHY  # the capture's GPU is idle
    busy = {"mask": 0, "active": []}
    assert _faulty(pcie_link=low_gen, clocks_event_reasons=busy) == Verdict.DEGRADED


def test_xids_from_the_kernel_log_and_nvml_events() -> None:
    log = (
        "[  12.1] NVRM: Xid (PCI:0000:00:06): 79, pid=1234, name=vllm, GPU has fallen off the bus.\n"
        "[  13.0] NVRM: Xid (PCI:0000:00:06): 13, pid=99, Graphics Exception\n"
        "[  14.0] something else\n"
    )
    parsed = health.parse_xids(log)
    assert [x["xid"] for x in parsed["0000:00:06"]] == [79, 13]
    (gpu,) = _base()["gpus"]
    judged = judge_gpu(gpu, parsed["0000:00:06"], [])
    assert judged.verdict == Verdict.UNHEALTHY and "fallen off the bus" in judged.summary
    assert judge_gpu(gpu, [{"xid": 13, "message": ""}], []).verdict == Verdict.HEALTHY  # an application's fault
    assert judge_gpu(gpu, [], [94]).verdict == Verdict.DEGRADED
    assert judge_gpu(gpu, [], [4242]).verdict == Verdict.DEGRADED  # unknown: warned, with where to look


def test_a_failed_reading_is_a_warning_and_unsupported_is_neither() -> None:
    (gpu,) = _base()["gpus"]
    gpu["readings"]["power"] = {"status": "error", "detail": "Unknown Error"}
    judged = judge_gpu(gpu, [], [])
    assert judged.verdict == Verdict.DEGRADED and "power could not be read" in judged.summary
    gpu["readings"]["power"] = {"status": "unsupported"}
    assert judge_gpu(gpu, [], []).verdict == Verdict.HEALTHY


def test_one_bad_gpu_of_eight_leaves_seven_usable() -> None:
    raw = _base()
    template = raw["gpus"][0]
    raw["gpus"] = []
    for i in range(8):
        gpu = copy.deepcopy(template)
        gpu["index"], gpu["pci_bus_id"] = i, f"0000:{0x19 + i:02x}:00"
        raw["gpus"].append(gpu)
    raw["gpus"][5]["readings"]["row_remap"]["value"]["pending"] = True
    report = parse_health(json.dumps(raw), "gpu-1")
    assert report.usable == (0, 1, 2, 3, 4, 6, 7)
    assert [g.index for g in report.excluded] == [5]
    assert report.to_json()["gpus"][5]["findings"][0]["reason"] == "a row remap is pending"


def test_unusable_readings_are_one_line_errors() -> None:
    with pytest.raises(HealthError, match=r"^gpu-1: the GPU health reading is not JSON"):
        parse_health("Traceback (most recent call last):", "gpu-1")
    with pytest.raises(HealthError, match="no GPU driver answered"):
        parse_health(json.dumps({"source": None, "gpus": [], "errors": ["nvml: no module"]}), "gpu-1")


def test_a_failed_dcgm_diagnostic_excludes_the_hosts_gpus_and_its_absence_is_neither() -> None:
    raw = _base()
    assert raw["dcgm"] == {"status": "unsupported"}  # no DCGM on the real H200 VM
    raw["dcgm"] = {
        "status": "ok",
        "value": {"level": 1, "passed": False, "exit": 226, "output_tail": ["| Memory | Fail - GPU : 0 |"]},
    }
    report = parse_health(json.dumps(raw), "gpu-1")
    assert report.usable == () and "dcgmi diag -r 1 failed (exit 226)" in report.gpus[0].summary
    raw["dcgm"]["value"].update(passed=True, exit=0)
    assert parse_health(json.dumps(raw), "gpu-1").usable == (0,)


def test_dcgm_runs_only_when_asked_and_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert health.dcgm_diag(1) == {"status": "unsupported"} or health.shutil.which("dcgmi")
    fake = tmp_path / "dcgmi"
    fake.write_text("#!/bin/sh\necho \"diag $*\"\necho '| Diagnostic | Result |'\nexit 226\n")
    fake.chmod(0o755)
    monkeypatch.setattr(health, "EXTRA_BIN_DIRS", str(tmp_path))
    assert health.dcgm_diag(0) == {"status": "unsupported"}
    got = health.dcgm_diag(1)
    assert got["value"] == {
        "level": 1,
        "passed": False,
        "exit": 226,
        "output_tail": ["diag diag -r 1", "| Diagnostic | Result |"],
    }
