"""Replicas only on healthy GPUs: the health report's exclusions -> the serving plan and the host plan."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.cli import main
from ms4fleet.config import HostConfig
from ms4fleet.health import Exclusion, HealthError, exclusions, exclusions_from_json, gate, parse_health
from ms4fleet.hostplan import host_plan
from ms4fleet.serving import plan_host

H200 = Path(__file__).parents[1] / "data" / "h200" / "health"
REVISION = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"


def host(kind: str = "h200-sxm", count: int = 8, **sections: Any) -> HostConfig:
    data: dict[str, Any] = {
        "ms4fleet_gpu": {"kind": kind, "count": count},
        "ms4fleet_weights": {"revision": REVISION, "hf_token": {"env": "HF_TOKEN"}},
    }
    data.update({f"ms4fleet_{k}": v for k, v in sections.items()})
    return HostConfig.from_host_data("gpu-1", data)


def eight(bad: dict[int, dict[str, Any]] | None = None, count: int = 8) -> str:
    """The real H200 capture's GPU, repeated ``count`` times; ``bad``: readings to change per index."""
    raw: dict[str, Any] = json.loads((H200 / "health-nvml.json").read_text())
    template = raw["gpus"][0]
    raw["gpus"] = []
    for i in range(count):
        gpu = copy.deepcopy(template)
        gpu["index"], gpu["pci_bus_id"] = i, f"0000:{0x19 + i:02x}:00"
        for name, value in (bad or {}).get(i, {}).items():
            gpu["readings"][name]["value"] = value
        raw["gpus"].append(gpu)
    return json.dumps(raw)


ROW_REMAP = {"row_remap": {"pending": True, "failure": False}}


def test_one_bad_gpu_of_eight_at_tp2_serves_three_replicas_and_says_why() -> None:
    report = parse_health(eight({5: ROW_REMAP}), "gpu-1")
    excluded = exclusions(report, 8)
    assert excluded == (Exclusion(5, "unhealthy: a row remap is pending"),)
    plan = plan_host(host(), excluded=excluded)
    assert plan.tp == 2
    # The other replicas keep their GPUs, ports and units: only the one on GPUs 4-5 is left out.
    assert [(r.index, r.gpus, r.port, r.unit_name) for r in plan.replicas] == [
        (0, (0, 1), 8000, "ms4fleet-vllm-0.service"),
        (1, (2, 3), 8001, "ms4fleet-vllm-1.service"),
        (3, (6, 7), 8003, "ms4fleet-vllm-3.service"),
    ]
    (missing,) = plan.missing
    assert missing.explanation == (
        "replica 2 (GPUs 4,5, port 8002) not placed: GPU 5 unhealthy: a row remap is pending"
    )
    assert plan.to_dict()["missing_replicas"] == [
        {"index": 2, "gpus": [4, 5], "port": 8002, "reasons": ["GPU 5 unhealthy: a row remap is pending"]}
    ]


def test_the_host_plan_leaves_out_the_unit_and_names_the_gpu() -> None:
    healthy = host_plan(host())
    report = parse_health(eight({5: ROW_REMAP}), "gpu-1")
    hp = host_plan(host(), excluded=exclusions(report, 8))
    units = [f.path for f in hp.files if f.kind == "unit"]
    assert units == [
        "/etc/systemd/system/ms4fleet-vllm-0.service",
        "/etc/systemd/system/ms4fleet-vllm-1.service",
        "/etc/systemd/system/ms4fleet-vllm-3.service",
    ]
    assert [u.name for u in hp.units if u.role == "replica"] == [
        "ms4fleet-vllm-0.service",
        "ms4fleet-vllm-1.service",
        "ms4fleet-vllm-3.service",
    ]
    doc = hp.to_json()
    assert doc["health"] == {
        "excluded_gpus": [{"gpu": 5, "reason": "unhealthy: a row remap is pending"}],
        "missing_replicas": [
            {"index": 2, "gpus": [4, 5], "port": 8002, "reasons": ["GPU 5 unhealthy: a row remap is pending"]}
        ],
    }
    assert doc["digest"] != healthy.digest
    # The replicas that stay are byte for byte the healthy plan's: nothing of theirs restarts.
    for path in units:
        assert hp.file(path).content == healthy.file(path).content


def test_a_healthy_report_plans_exactly_what_a_plan_without_one_does() -> None:
    report = parse_health(eight(), "gpu-1")
    assert exclusions(report, 8) == ()
    assert host_plan(host(), excluded=exclusions(report, 8)).to_json() == host_plan(host()).to_json()
    assert "health" not in host_plan(host()).to_json()


def test_a_gpu_the_driver_does_not_list_is_excluded() -> None:
    report = parse_health(eight(count=7), "gpu-1")  # GPU 7 fell off the bus: NVML lists 7
    assert exclusions(report, 8) == (Exclusion(7, "not listed by nvml (7 of 8 GPUs answered)"),)
    assert [r.gpus for r in plan_host(host(), excluded=exclusions(report, 8)).replicas] == [(0, 1), (2, 3), (4, 5)]


@pytest.mark.parametrize(
    ("bad", "kept"),
    [
        ({0}, [(4, 5, 6, 7)]),  # h100-sxm 8 at TP4: one bad GPU costs its block of four
        ({1, 6}, []),
        ({7}, [(0, 1, 2, 3)]),
    ],
)
def test_tp4_groups_stay_whole_aligned_blocks(bad: set[int], kept: list[tuple[int, ...]]) -> None:
    excluded = tuple(Exclusion(g, "unhealthy: test") for g in bad)
    plan = plan_host(host("h100-sxm"), excluded=excluded)
    assert plan.tp == 4
    assert [r.gpus for r in plan.replicas] == kept
    # A group is never rebuilt from leftover GPUs of two blocks (they may sit under different CPU sockets).
    assert all(r.gpus == tuple(range(r.gpus[0], r.gpus[0] + 4)) and r.gpus[0] % 4 == 0 for r in plan.replicas)


def test_an_explicit_replica_layout_loses_only_the_replica_on_the_bad_gpu() -> None:
    layout = [{"gpus": [0, 1], "port": 9000}, {"gpus": [2, 3], "port": 9001}]
    plan = plan_host(host(count=4, serving={"replicas": layout}), excluded=(Exclusion(2, "unhealthy: Xid 79"),))
    assert [(r.index, r.gpus, r.port) for r in plan.replicas] == [(0, (0, 1), 9000)]
    assert plan.missing[0].reasons == ("GPU 2 unhealthy: Xid 79",)


def test_the_gate_names_each_replica_on_a_gpu_excluded_now() -> None:
    report = parse_health(eight({3: ROW_REMAP}), "gpu-1")
    planned = {r.index: r.gpus for r in plan_host(host()).replicas}
    (line,) = gate(report, 8, planned)
    assert line.startswith("gpu-1: replica 1 would run on GPU 3 unhealthy: a row remap is pending: not started")
    assert gate(parse_health(eight(), "gpu-1"), 8, planned) == ()
    # The plan made with the report passes its own gate.
    placed = plan_host(host(), excluded=exclusions(report, 8))
    assert gate(report, 8, {r.index: r.gpus for r in placed.replicas}) == ()


def test_exclusions_read_back_from_an_engine_are_checked() -> None:
    doc = [e.to_json() for e in (Exclusion(5, "unhealthy: a row remap is pending"),)]
    assert exclusions_from_json(doc, "gpu-1") == (Exclusion(5, "unhealthy: a row remap is pending"),)
    assert exclusions_from_json(None, "gpu-1") == ()
    for bad in ({"gpu": 5}, [{"gpu": "5", "reason": "x"}], [{"gpu": True, "reason": "x"}], [{"gpu": 99, "reason": ""}]):
        with pytest.raises(HealthError, match=r"^gpu-1: GPU exclusions must be a list"):
            exclusions_from_json(bad, "gpu-1")


def test_ms4fleet_plan_with_a_health_reading_explains_the_missing_replica(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = Path(__file__).parents[2] / "inventory" / "example.py"
    reading = tmp_path / "health.json"
    excluded = [{"gpu": 5, "reason": "unhealthy: a row remap is pending"}]
    reading.write_text(json.dumps([{"host": "gpu-h200-01", "report": None, "error": "", "excluded": excluded}]))
    assert main(["plan", str(inventory), "--health", str(reading), "--limit", "gpu-h200-01"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "3 x TP2 (1 left out)" in out
    assert "x replica 2 (GPUs 4,5, port 8002) not placed: GPU 5 unhealthy: a row remap is pending" in out
    assert main(["plan", str(inventory), "--health", str(reading), "--json", "--limit", "gpu-h200-01"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)["hosts"]
    assert [r["index"] for r in doc["plan"]["replicas"]] == [0, 1, 3]
    assert doc["plan"]["health"]["missing_replicas"][0]["reasons"] == ["GPU 5 unhealthy: a row remap is pending"]
    reading.write_text(json.dumps([{"host": "gpu-h200-01", "excluded": [{"gpu": "5"}]}]))
    assert main(["plan", str(inventory), "--health", str(reading)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("GPU exclusions must be a list of {gpu: 0..63, reason: text}") and "\n" not in err


def test_the_plan_turns_persistence_mode_on_through_a_drop_in() -> None:
    hp = host_plan(host())
    (dropin,) = [f for f in hp.files if f.kind == "unit-dropin"]
    assert dropin.path == "/etc/systemd/system/nvidia-persistenced.service.d/ms4fleet.conf"
    assert hp.dropin_unit(dropin) == "nvidia-persistenced"
    assert "nvidia-persistenced" in [u.name for u in hp.units if u.role == "provision"]
    # An empty ExecStart= first: systemd then replaces the packaged command instead of adding a second one.
    assert dropin.content.splitlines()[1:] == [
        "[Service]",
        "ExecStart=",
        "ExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --persistence-mode --verbose",
    ]
    off = host_plan(host(provision={"persistence_mode": False}))
    assert not [f for f in off.files if f.kind == "unit-dropin"]
    assert "nvidia-persistenced" not in [u.name for u in off.units]
