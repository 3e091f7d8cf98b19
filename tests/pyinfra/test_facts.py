"""Facts, spec style: a fact's command output in, the parsed fact out; real captures where they exist
(the probe run on the real H200 host through NVML and through nvidia-smi, its /proc driver version)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ms4fleet.provision import OsRelease
from ms4fleet_pyinfra import facts

DATA = Path(__file__).parents[1] / "data"
H200 = DATA / "h200" / "2026-11-29"
SEP = "--ms4fleet--"


@pytest.mark.parametrize(
    ("capture", "source", "free_gib"),
    [("probe-nvml-idle.json", "nvml", 139.8), ("probe-nvidia-smi-cotenant.json", "nvidia-smi", 39.2)],
)
def test_probe_fact_parses_real_h200_captures(capture: str, source: str, free_gib: float) -> None:
    result = facts.Probe().process((H200 / capture).read_text().splitlines())
    assert result.error == "" and result.report is not None
    report = result.report
    assert report.source == source
    assert report.driver.version == "580.159.04"
    assert [g.name for g in report.gpus] == ["NVIDIA H200"]
    assert report.gpus[0].memory_free_bytes is not None
    assert round(report.gpus[0].memory_free_bytes / 2**30, 1) == free_gib


def test_probe_fact_reports_garbage_instead_of_raising() -> None:
    result = facts.Probe().process(["Traceback (most recent call last):", "ImportError: no"])
    assert result.report is None and "not JSON" in result.error


def test_driver_state_from_real_proc_version_with_apt_package_and_hold() -> None:
    output = [
        "nvidia-driver-580-open\t580.95.05-0ubuntu1\thi ",
        "nvidia-driver-570\t570.195.03-1\trc ",
        SEP,
        "nvidia-driver-580-open",
        "nvidia-fabricmanager",
        SEP,
        SEP,
        *(H200 / "proc-driver-nvidia-version.txt").read_text().splitlines(),
        SEP,
        "reboot-required",
    ]
    info = facts.DriverState().process(output)
    assert info == facts.DriverInfo(
        package="nvidia-driver-580-open",
        version="580.95.05",
        held=True,
        loaded_version="580.159.04",
        open_modules=True,
        reboot_required=True,
    )
    assert info.branch == 580


def test_driver_state_of_a_host_without_driver() -> None:
    info = facts.DriverState().process([SEP, SEP, SEP, SEP])
    assert info == facts.DriverInfo() and info.branch is None


def test_driver_state_prefers_what_nvidia_smi_says_is_loaded() -> None:
    output = ["nvidia-driver-580-open\t580.95.05-1\tii ", SEP, SEP, "580.95.05", SEP, SEP]
    info = facts.DriverState().process(output)
    assert (info.version, info.loaded_version, info.held, info.open_modules) == ("580.95.05", "580.95.05", False, True)


def test_fabric_manager_state() -> None:
    output = [
        "nvidia-fabricmanager\t580.95.05-1\thi ",
        "nvlsm\t2025.06.5-1\tii ",
        SEP,
        "nvidia-fabricmanager",
        SEP,
        "active",
    ]
    info = facts.FabricManagerState().process(output)
    assert info.version == "580.95.05" and info.active and info.held == frozenset({"nvidia-fabricmanager"})
    assert set(info.packages) == {"nvidia-fabricmanager", "nvlsm"}


def test_docker_state_keeps_daemon_json_bytes_and_lists_runtimes() -> None:
    content = '{\n    "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}\n}\n'
    encoded = base64.b64encode(content.encode()).decode()
    info = facts.DockerState().process([encoded, SEP, "installed", SEP, "active"])
    assert info.daemon_json == content and info.active and info.installed
    assert list(info.runtimes) == ["nvidia"]
    bare = facts.DockerState().process(["absent", SEP, SEP, "inactive"])
    assert bare == facts.DockerInfo()


def test_units_weights_and_os_release() -> None:
    units = facts.VllmUnits().process(
        [f"ms4fleet-vllm-0.service {'a' * 64} active enabled", "ms4fleet-vllm-1.service " + "b" * 64 + " failed"]
    )
    assert units["ms4fleet-vllm-0.service"] == facts.UnitInfo("a" * 64, "active", "enabled")
    assert units["ms4fleet-vllm-1.service"].active == "failed"
    report = {"ok": True, "files": 5}
    assert facts.WeightsState().process(["noise", json.dumps(report)]) == report
    assert facts.WeightsState().process(["nothing"])["ok"] is False
    assert facts.OsReleaseFact().process(['NAME="Ubuntu"', 'VERSION_ID="22.04"', "ID=ubuntu"]) == OsRelease(
        "ubuntu", "22.04"
    )


def test_batched_sections_and_service_states() -> None:
    sections = facts.Sections().process([f"{SEP} dpkg", "a", "b", f"{SEP} holds", f"{SEP} image", "sha256:1"])
    assert sections == {"dpkg": ["a", "b"], "holds": [], "image": ["sha256:1"]}
    states = facts.ServiceStates().process(["docker active enabled", "nvidia-fabricmanager inactive"])
    assert states == {"docker": ("active", "enabled"), "nvidia-fabricmanager": ("inactive", "")}


def test_env_file_state_never_mistakes_an_error_for_unchanged() -> None:
    assert facts.EnvFileState().process(["unchanged"]) == "unchanged"
    assert (
        facts.EnvFileState()
        .process(["secret file /etc/ms4fleet/api-key is missing or empty"])
        .startswith("missing-secret")
    )
