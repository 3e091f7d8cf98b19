"""The nvidia-smi table parser on real captures from public issues and docs (tests/data/nvidia_smi)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ms4fleet.hostside.probe import MIB, parse_smi_table

SMI = Path(__file__).resolve().parents[1] / "data" / "nvidia_smi"


def parse(name: str) -> dict:
    return parse_smi_table((SMI / name).read_text(encoding="utf-8"))


def test_every_capture_has_a_source() -> None:
    sources = (SMI / "SOURCES.md").read_text(encoding="utf-8")
    captures = sorted(path.name for path in SMI.glob("*.txt"))
    assert len(captures) >= 5
    for name in captures:
        assert f"`{name}`" in sources, f"{name} has no line in SOURCES.md"


def test_h100_hgx_r535_with_processes() -> None:
    table = parse("h100x8-535-processes.txt")
    assert table["driver_version"] == "535.129.03"
    assert table["cuda_version"] == "12.2"
    assert [gpu["index"] for gpu in table["gpus"]] == list(range(8))
    first = table["gpus"][0]
    assert first["name"] == "NVIDIA H100 80GB HBM3"
    assert first["pci_bus_id"] == "0000:1b:00.0"
    assert first["persistence_mode"] is True
    assert first["ecc_enabled"] is True
    assert first["mig_mode"] == "disabled"
    assert first["memory_used_bytes"] == 18449 * MIB
    assert first["memory_total_bytes"] == 81559 * MIB
    assert table["gpus"][7]["pci_bus_id"] == "0000:df:00.0"
    assert len(table["processes"]) == 8
    proc = table["processes"][0]
    assert proc == {
        "gpu_index": 0,
        "gpu_instance_id": None,
        "compute_instance_id": None,
        "pid": 3375095,
        "type": "C",
        "name": "/usr/bin/python",
        "used_bytes": 18430 * MIB,
        "memory_truncated": False,
    }
    assert sum(p["used_bytes"] for p in table["processes"]) == (18430 + 7 * 16254) * MIB


def test_h200_r580_truncated_process_memory() -> None:
    table = parse("h200x8-580-processes-truncated.txt")
    assert table["driver_version"] == "580.105.08"
    assert table["cuda_version"] == "13.0"
    assert {gpu["name"] for gpu in table["gpus"]} == {"NVIDIA H200"}
    assert {gpu["memory_total_bytes"] for gpu in table["gpus"]} == {143771 * MIB}
    assert table["gpus"][1]["memory_used_bytes"] == 133201 * MIB
    assert len(table["processes"]) == 9
    ray = [p for p in table["processes"] if p["name"] == "ray::ray_math_ppl"]
    assert [p["gpu_index"] for p in ray] == [1, 2, 5, 6]
    # "13319..." is nvidia-smi cutting the column: the amount is unknown, not 13319 MiB.
    assert all(p["used_bytes"] is None and p["memory_truncated"] for p in ray)
    on_gpu4 = [(p["pid"], p["used_bytes"]) for p in table["processes"] if p["gpu_index"] == 4]
    assert on_gpu4 == [(3160599, 1542 * MIB), (3460502, 714 * MIB)]


def test_b200_idle_no_process_table() -> None:
    table = parse("b200x8-575-idle.txt")
    assert table["cuda_version"] == "12.9"
    assert len(table["gpus"]) == 8
    assert {gpu["name"] for gpu in table["gpus"]} == {"NVIDIA B200"}
    assert {gpu["memory_total_bytes"] for gpu in table["gpus"]} == {183359 * MIB}
    assert {gpu["memory_used_bytes"] for gpu in table["gpus"]} == {0}
    assert table["processes"] == []


def test_err_and_na_fields_become_unknown() -> None:
    table = parse("a100x4-595-err.txt")
    assert table["cuda_version"] == "13.2"
    healthy, broken = table["gpus"][1], table["gpus"][2]
    assert healthy["ecc_enabled"] is True and healthy["mig_mode"] == "disabled"
    # GPU 2 shows ERR! for fan and MIG mode, N/A for bus display and ECC: unknown, never a value.
    assert broken["pci_bus_id"] == "0000:ca:00.0"
    assert broken["ecc_enabled"] is None
    assert broken["mig_mode"] is None
    assert broken["memory_total_bytes"] == 81920 * MIB
    assert table["processes"] == [
        {
            "gpu_index": 0,
            "gpu_instance_id": None,
            "compute_instance_id": None,
            "pid": 1383739,
            "type": "C",
            "name": "VLLM::EngineCore",
            "used_bytes": 69608 * MIB,
            "memory_truncated": False,
        }
    ]


def test_mig_enabled_gpu_and_mig_devices() -> None:
    table = parse("a100-mig-535-enabled.txt")
    (gpu,) = table["gpus"]
    assert gpu["mig_mode"] == "enabled"
    assert gpu["ecc_enabled"] is True  # the ECC column reads "On" when MIG is enabled
    assert table["mig_devices"] == [
        {
            "gpu_index": 0,
            "gpu_instance_id": 5,
            "compute_instance_id": 0,
            "mig_device": 0,
            "memory_used_bytes": 25 * MIB,
            "memory_total_bytes": 9856 * MIB,
        }
    ]
    assert table["processes"] == []


@pytest.mark.parametrize("name", sorted(p.name for p in SMI.glob("*.txt")))
def test_gpu_rows_are_complete(name: str) -> None:
    """Every GPU row of every capture yields an index, a bus id and a total memory."""
    for gpu in parse(name)["gpus"]:
        assert gpu["pci_bus_id"] is not None, gpu
        assert gpu["memory_total_bytes"], gpu
