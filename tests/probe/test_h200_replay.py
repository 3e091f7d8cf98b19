"""Replay of the real H200 run (tests/data/h200/2026-11-29, made by tests/data/h200/capture.sh on the
accelerator machine): NVML and nvidia-smi agree, and the headroom verdict for a Mistral Small 4 FP8 replica
flips from fits to does-not-fit when a co-tenant process holds ~100 GiB."""

from __future__ import annotations

from pathlib import Path

import pytest

from ms4fleet.catalog import model_profiles
from ms4fleet.headroom import ReplacedService, check_headroom
from ms4fleet.hostside.probe import MIB, QUERY_GPU_FIELDS, parse_query_csv, parse_smi_table
from ms4fleet.probe import ProbeReport, parse_probe

RUN = Path(__file__).resolve().parents[1] / "data" / "h200" / "2026-11-29"
FP8 = model_profiles()["mistral-small-4-fp8"]


def report(name: str) -> ProbeReport:
    return parse_probe((RUN / f"probe-{name}.json").read_text(encoding="utf-8"), host="h200")


@pytest.mark.parametrize("phase", ["idle", "cotenant"])
def test_nvml_and_nvidia_smi_agree_on_the_real_gpu(phase: str) -> None:
    nvml, smi = report(f"nvml-{phase}"), report(f"nvidia-smi-{phase}")
    assert (nvml.source, smi.source) == ("nvml", "nvidia-smi")
    (a,), (b,) = nvml.gpus, smi.gpus
    for field in ("index", "uuid", "name", "pci_bus_id", "pci_device_id", "compute_capability", "mig_mode"):
        assert getattr(a, field) == getattr(b, field), field
    assert (a.ecc_enabled, a.persistence_mode) == (b.ecc_enabled, b.persistence_mode) == (True, True)
    assert a.memory_total_bytes == b.memory_total_bytes == 143771 * MIB
    # nvidia-smi rounds to MiB (reserved upwards): the byte figures agree within 1 MiB.
    for field in ("memory_reserved_bytes", "memory_used_bytes", "memory_free_bytes"):
        assert abs(getattr(a, field) - getattr(b, field)) <= MIB, field
    assert nvml.driver.version == smi.driver.version == "580.159.04"
    assert nvml.driver.cuda_driver_version == smi.driver.cuda_driver_version == "13.0"
    assert [(p.pid, p.used_bytes) for p in nvml.processes] == [(p.pid, p.used_bytes) for p in smi.processes]
    assert nvml.errors == smi.errors == ()


def test_real_h200_facts() -> None:
    idle = report("nvml-idle")
    (gpu,) = idle.gpus
    assert gpu.memory_total_bytes == 150754820096
    assert gpu.memory_reserved_bytes == 644939776
    assert gpu.memory_used_bytes == 0
    assert idle.gpu_kind(gpu) is not None and idle.gpu_kind(gpu).id == "h200-sxm"  # type: ignore[union-attr]
    assert idle.driver.kernel_module.flavor == "open"
    assert idle.nvswitch.present is False
    assert idle.fabric_manager.nvml_states == ("not-supported",)
    assert idle.fabric_manager.service is None  # no systemd in that VM


def test_pci_only_probe_sees_the_gpu_without_memory() -> None:
    pci = report("pci-idle")
    assert pci.source == "pci"
    (gpu,) = pci.gpus
    assert (gpu.pci_bus_id, gpu.pci_device_id, gpu.memory_total_bytes) == ("0000:00:06.0", "0x2335", None)
    assert pci.gpu_kind(gpu).id == "h200-sxm"  # type: ignore[union-attr]


def test_cotenant_process_is_listed_with_its_memory() -> None:
    cotenant = report("nvml-cotenant")
    (proc,) = cotenant.processes
    assert proc.name == "python3" and proc.gpu_index == 0
    assert proc.used_bytes is not None and proc.used_bytes > 100 * 1024**3
    assert cotenant.gpus[0].memory_free_bytes < 40 * 1024**3  # type: ignore[operator]


def test_raw_captures_parse_like_the_probe() -> None:
    table = parse_smi_table((RUN / "nvidia-smi-cotenant.txt").read_text(encoding="utf-8"))
    (proc,) = table["processes"]
    assert proc["pid"] == 471 and proc["memory_truncated"] is True  # "10301..." in the table
    (row,) = parse_query_csv((RUN / "query-gpu-cotenant.csv").read_text(encoding="utf-8"), QUERY_GPU_FIELDS)
    assert row["memory.used"] == "103019" and row["memory.reserved"] == "616" and row["pci.device_id"] == "0x233510DE"


@pytest.mark.parametrize("source", ["nvml", "nvidia-smi"])
def test_headroom_flips_from_fits_to_does_not_fit_with_a_cotenant(source: str) -> None:
    idle = check_headroom(report(f"{source}-idle"), FP8, tp=1)
    busy = check_headroom(report(f"{source}-cotenant"), FP8, tp=1)
    assert idle.verdict == "fits", idle.reasons
    assert idle.sizing is not None and idle.sizing.start_gate_ok is True
    assert idle.sizing.full_length_sequences >= 1
    assert busy.verdict == "does-not-fit", busy.reasons
    assert busy.sizing is not None and busy.sizing.start_gate_ok is False
    assert any("pid 471 python3" in reason for reason in busy.reasons), busy.reasons


def test_cotenant_memory_counts_when_it_is_the_replica_being_replaced() -> None:
    """The same real co-tenant, declared as the service being replaced: its memory is freed by the stop,
    so the new replica fits."""
    cotenant = report("nvml-cotenant")
    (proc,) = cotenant.processes
    replaced = cotenant.model_copy(
        update={"processes": (proc.model_copy(update={"systemd_unit": "ms4fleet-vllm@0.service"}),)}
    )
    verdict = check_headroom(
        replaced, FP8, tp=1, replacing=ReplacedService(systemd_units=frozenset({"ms4fleet-vllm@0.service"}))
    )
    assert verdict.verdict == "fits", verdict.reasons
    assert verdict.gpus[0].reclaimable_bytes == proc.used_bytes
    other = check_headroom(
        replaced, FP8, tp=1, replacing=ReplacedService(systemd_units=frozenset({"ms4fleet-vllm@1.service"}))
    )
    assert other.verdict == "does-not-fit"
