"""Headroom gate rules on probe reports derived from the real H200 run: which memory counts as available,
which GPUs are used, and when the gate refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ms4fleet.catalog import GIB, model_profiles
from ms4fleet.headroom import ReplacedService, check_headroom
from ms4fleet.probe import GpuProcess, ProbeReport, parse_probe

RUN = Path(__file__).resolve().parents[1] / "data" / "h200" / "2026-11-29"
FP8 = model_profiles()["mistral-small-4-fp8"]
UNIT = "ms4fleet-vllm@0.service"


def real(name: str) -> ProbeReport:
    return parse_probe((RUN / f"probe-{name}.json").read_text(encoding="utf-8"))


def with_process(report: ProbeReport, **fields: Any) -> ProbeReport:
    (proc,) = report.processes
    return report.model_copy(update={"processes": (proc.model_copy(update=fields),)})


def test_gpu_missing_on_the_host_does_not_fit() -> None:
    verdict = check_headroom(real("nvml-idle"), FP8, tp=2)
    assert verdict.verdict == "does-not-fit"
    assert verdict.reasons == ("GPU(s) [1] not found: the probe (nvml) saw 1 GPU(s)",)


def test_indices_must_match_tp() -> None:
    with pytest.raises(ValueError, match=r"gpu_indices \[0\] do not match tp=2"):
        check_headroom(real("nvml-idle"), FP8, tp=2, gpu_indices=[0])


def test_mig_enabled_gpu_never_fits() -> None:
    idle = real("nvml-idle")
    mig = idle.model_copy(update={"gpus": (idle.gpus[0].model_copy(update={"mig_mode": "enabled"}),)})
    verdict = check_headroom(mig, FP8, tp=1)
    assert verdict.verdict == "does-not-fit"
    assert any("MIG enabled" in reason for reason in verdict.reasons)


def test_before_the_driver_the_catalog_gives_the_total_and_the_gate_is_not_checked() -> None:
    verdict = check_headroom(real("pci-idle"), FP8, tp=1)
    assert verdict.verdict == "fits"
    # the catalog's CUDA total (139.80 GiB, measured), not nvidia-smi's 143,771 MiB: what vLLM sizes from
    assert verdict.gpus[0].total_bytes == 150_109_880_320 and verdict.gpus[0].free_bytes is None
    assert verdict.sizing is not None and verdict.sizing.start_gate_ok is None
    assert verdict.notes == ("no live memory figures (probe source pci): the start gate was not checked",)


def test_replaced_service_matched_by_container_name() -> None:
    report = with_process(real("nvml-cotenant"), container_id="f" * 64, container_name="/ms4fleet-vllm-0")
    assert check_headroom(report, FP8, tp=1).verdict == "does-not-fit"
    by_name = check_headroom(
        report, FP8, tp=1, replacing=ReplacedService(container_names=frozenset({"ms4fleet-vllm-0"}))
    )
    assert by_name.verdict == "fits"
    by_id = check_headroom(report, FP8, tp=1, replacing=ReplacedService(container_ids=frozenset({"f" * 64})))
    assert by_id.verdict == "fits"


def test_replaced_service_with_unknown_memory_is_not_counted() -> None:
    report = with_process(real("nvml-cotenant"), systemd_unit=UNIT, used_bytes=None)
    verdict = check_headroom(report, FP8, tp=1, replacing=ReplacedService(systemd_units=frozenset({UNIT})))
    assert verdict.verdict == "does-not-fit"
    assert verdict.notes == (f"GPU 0: pid 471 python3 ({UNIT}) holds an unknown amount, not counted as available",)


def test_available_memory_is_capped_by_what_the_driver_reserves() -> None:
    report = with_process(real("nvml-cotenant"), systemd_unit=UNIT, used_bytes=200 * GIB)
    verdict = check_headroom(report, FP8, tp=1, replacing=ReplacedService(systemd_units=frozenset({UNIT})))
    gpu = report.gpus[0]
    assert verdict.gpus[0].available_bytes == gpu.memory_total_bytes - gpu.memory_reserved_bytes  # type: ignore[operator]


def test_smaller_model_does_not_fit_beside_the_cotenant_either() -> None:
    """gpt-oss-120b (64.4 GiB as vLLM loads it): the start gate wants utilization x total free; a utilization low enough to pass
    it (0.27) leaves no room for the weights."""
    busy = real("nvml-cotenant")
    gpt = model_profiles()["gpt-oss-120b"]
    assert check_headroom(busy, gpt, tp=1).verdict == "does-not-fit"
    squeezed = check_headroom(busy, gpt, tp=1, gpu_memory_utilization=0.27)
    assert squeezed.sizing is not None and squeezed.sizing.start_gate_ok is True
    assert squeezed.verdict == "does-not-fit"  # 0.27 x 139.8 GiB cannot hold 64.4 GiB of weights
    assert any("exceed 0.27 x 139.8 GiB" in reason for reason in squeezed.reasons)


def test_headroom_report_serialises() -> None:
    data = check_headroom(real("nvml-cotenant"), FP8, tp=1).to_dict()
    assert data["verdict"] == "does-not-fit" and data["host"] == "vm"
    assert data["gpus"][0]["others"] == ["pid 471 python3 (no unit) holds 100.6 GiB"]
    assert data["sizing"]["start_gate_ok"] is False


def test_gpu_process_owner_rules() -> None:
    proc = GpuProcess(
        pid=1,
        gpu_index=0,
        gpu_uuid=None,
        used_bytes=1,
        name="vllm",
        systemd_unit=None,
        container_id=None,
        container_name=None,
    )
    assert not ReplacedService(systemd_units=frozenset({UNIT})).owns(proc)
    assert ReplacedService(systemd_units=frozenset({UNIT})).owns(proc.model_copy(update={"systemd_unit": UNIT}))
    # A rollout's switch stops every replica of the host: any ms4fleet replica's unit or container is replaced,
    # nothing else is.
    every = ReplacedService(systemd_units=frozenset({UNIT}), every_replica=True)
    assert every.owns(proc.model_copy(update={"systemd_unit": "ms4fleet-vllm-7.service"}))
    assert every.owns(proc.model_copy(update={"container_name": "/ms4fleet-vllm-12"}))
    assert not every.owns(proc.model_copy(update={"systemd_unit": "ms4fleet-vllm-x.service"}))
    assert not every.owns(proc.model_copy(update={"systemd_unit": "other.service", "container_name": "vllm-1"}))
    assert not ReplacedService(systemd_units=frozenset({UNIT})).owns(
        proc.model_copy(update={"systemd_unit": "ms4fleet-vllm-7.service"})
    )
