"""Brownfield decisions (ms4fleet.adopt) and how the HostPlan applies them. Each host shape starts from the
probe captured on the real H200 (tests/data/h200/2026-12-04-brownfield/probe.json) with its ``stack`` part
changed to what a runfile, apt, DKMS or docker-ce host reports; the host-side readers are tested on files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.adopt import RUNFILE_UNINSTALL, classify
from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.hostplan import host_plan, stack_for
from ms4fleet.hostside import probe as hostprobe
from ms4fleet.probe import ProbeReport, parse_probe
from ms4fleet.provision import NOUVEAU_FILE, PERSISTENCE_DROPIN, OsRelease

CAPTURE = Path(__file__).parents[1] / "data" / "h200" / "2026-12-04-brownfield" / "probe.json"
UBUNTU = OsRelease("ubuntu", "24.04")


def report(flavor: str | None = None, version: str | None = None, **stack: Any) -> ProbeReport:
    data = json.loads(CAPTURE.read_text())
    data["stack"].update(stack)
    module = data["driver"]["kernel_module"]
    if flavor is not None:
        module["flavor"] = flavor
    if version is not None:
        module["version"] = data["driver"]["version"] = version
    return parse_probe(json.dumps(data))


def config(gpu: str = "h200-sxm", count: int = 1, **provision: Any) -> HostConfig:
    data: dict[str, Any] = {"ms4fleet_gpu": {"kind": gpu, "count": count}}
    if provision:
        data["ms4fleet_provision"] = provision
    return HostConfig.from_host_data("gpu-1", data)


def plan(cfg: HostConfig, rep: ProbeReport) -> Any:
    return host_plan(cfg, UBUNTU, stack=stack_for(cfg, rep))


def test_the_real_h200_is_adopted_with_no_driver_package_pin_or_file() -> None:
    cfg = config()
    hp = plan(cfg, report())
    assert hp.group("driver") is None
    assert not [p for p in hp.provision.pins if any(n.startswith("nvidia-driver") for n in p.names)]
    paths = {f.path for f in hp.files}
    assert NOUVEAU_FILE not in paths and PERSISTENCE_DROPIN not in paths
    stack = hp.to_json()["stack"]
    assert stack["driver"]["action"] == "adopt" and stack["driver"]["owner"] == "external"
    assert stack["driver"]["loaded"] == "580.159.04" and stack["driver_version"] == "580.159.04"
    assert "left as it is" in stack["driver"]["reason"]
    # Without a probe the same inventory plans the driver package (what the engines did before).
    assert host_plan(cfg, UBUNTU).group("driver") is not None


def test_another_branch_than_the_external_driver_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        plan(config(driver_branch=570, driver_version="570.195.03"), report())
    line = str(err.value)
    assert "\n" not in line and line.startswith("gpu-1: driver 580.159.04")
    assert "driver_branch: 580" in line and "manage_driver: false" in line


def test_manage_driver_false_is_unmanaged_whatever_the_branch() -> None:
    hp = plan(config(manage_driver=False, driver_branch=570, driver_version="570.195.03"), report())
    assert hp.group("driver") is None
    assert hp.to_json()["stack"]["driver"]["action"] == "unmanaged"


RUNFILE = {
    "runfile_markers": ["/usr/bin/nvidia-uninstall"],
    "module_file": "/lib/modules/6.8.0-45-generic/kernel/drivers/video/nvidia.ko",
}


def test_a_runfile_driver_of_another_branch_needs_takeover() -> None:
    rep = report(version="570.172.08", module_file_version="570.172.08", **RUNFILE)
    assert classify(rep).owner == "runfile"
    with pytest.raises(ConfigError, match=r"driver_takeover: true .* nvidia-driver-580-open"):
        plan(config(), rep)
    hp = plan(config(driver_takeover=True), rep)
    assert hp.group("driver") is not None and hp.group("driver").names == ("nvidia-driver-580-open",)
    assert hp.to_json()["stack"]["before_driver_install"] == list(RUNFILE_UNINSTALL)


def test_a_runfile_driver_on_the_branch_is_adopted() -> None:
    hp = plan(config(), report(module_file_version="580.159.04", **RUNFILE))
    assert hp.group("driver") is None and hp.to_json()["stack"]["driver"]["owner"] == "runfile"


def test_a_proprietary_module_on_b200_is_refused_unless_taken_over() -> None:
    pkgs = {"nvidia-driver-580": "580.95.05-0ubuntu1", "nvidia-kernel-580": "580.95.05-0ubuntu1"}
    rep = report(flavor="proprietary", version="580.95.05", packages=pkgs, module_owner="nvidia-kernel-580")
    with pytest.raises(ConfigError, match="proprietary module and b200 needs the open one"):
        plan(config("b200", 8), rep)
    hp = plan(config("b200", 8, driver_takeover=True), rep)
    assert hp.to_json()["stack"]["driver"]["action"] == "upgrade"
    assert hp.group("driver").names == ("nvidia-driver-580-open",)
    # On Hopper the open module is only recommended: apt keeps the proprietary driver it owns, in its flavour.
    kept = plan(config(), rep)
    assert kept.to_json()["stack"]["driver"]["action"] == "keep"
    assert kept.group("driver").names == ("nvidia-driver-580",)


def test_apt_owned_drivers_are_kept_or_upgraded_through_apt() -> None:
    pkgs = {"nvidia-driver-580-open": "580.95.05-0ubuntu1", "nvidia-dkms-580-open": "580.95.05-0ubuntu1"}
    dkms = "/lib/modules/6.8.0-45-generic/updates/dkms/nvidia.ko.zst"
    same = report(version="580.95.05", packages=pkgs, module_file=dkms, module_file_version="580.95.05")
    assert classify(same).owner == "dkms" and classify(same).package == "nvidia-dkms-580-open"
    assert plan(config(), same).to_json()["stack"]["driver"]["action"] == "keep"
    newer = plan(config(driver_version="580.126.09"), same)
    assert newer.to_json()["stack"]["driver"]["action"] == "upgrade"
    assert newer.group("driver") is not None and newer.provision.pins[0].version == "580.126.09-*"


def test_docker_ce_is_adopted_never_a_second_engine() -> None:
    cfg = HostConfig.from_host_data(
        "gpu-1", {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 1}, "ms4fleet_runtime": {"kind": "docker"}}
    )
    hp = plan(cfg, report(packages={"docker-ce": "5:28.1.1-1~ubuntu.24.04~noble", "containerd.io": "1.7.27-1"}))
    assert hp.group("docker") is None
    assert not [p for p in hp.provision.pins if {"docker.io", "containerd"} & set(p.names)]
    assert hp.group("container_toolkit") is not None
    assert [f.path for f in hp.merged_files] == ["/etc/docker/daemon.json"]
    assert "docker" in {u.name for u in hp.units}
    assert hp.to_json()["stack"]["docker"]["action"] == "adopt"
    kept = plan(cfg, report(packages={"docker.io": "27.5.1-0ubuntu3", "nvidia-container-toolkit": "1.17.8-1"}))
    assert kept.group("docker") is not None
    assert kept.to_json()["stack"]["docker"]["action"] == "keep"
    assert kept.to_json()["stack"]["container_toolkit"]["action"] == "keep"


def test_an_adopted_driver_pins_the_fabric_manager_to_its_own_version() -> None:
    hp = plan(config(count=8), report(module_file_version="580.159.04", **RUNFILE))
    assert hp.group("driver") is None
    assert [(p.names, p.version) for p in hp.provision.pins if "nvidia-fabricmanager" in p.names] == [
        (("nvidia-fabricmanager",), "580.159.04-*")
    ]


def test_dpkg_query_lists_installed_packages_only() -> None:
    text = (
        "ii \tnvidia-driver-580-open\t580.95.05-0ubuntu1\nrc \tnvidia-driver-570\t570.1-1\nun \tdocker-ce\t\n"
        # Held (ms4fleet holds what it pins): still installed.
        "hi \tdocker.io\t20.10.24+dfsg1-1\n"
    )
    assert hostprobe.parse_dpkg_query(text) == {
        "nvidia-driver-580-open": "580.95.05-0ubuntu1",
        "docker.io": "20.10.24+dfsg1-1",
    }


def test_kernels_and_their_nvidia_modules_are_read_from_disk(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    for name in ("vmlinuz-6.8.0-45-generic", "vmlinuz-6.8.0-48-generic", "config-6.8.0-45-generic"):
        (boot / name).write_text("")
    (boot / "vmlinuz").symlink_to("vmlinuz-6.8.0-48-generic")
    dkms = tmp_path / "modules" / "6.8.0-45-generic" / "updates" / "dkms"
    dkms.mkdir(parents=True)
    (dkms / "nvidia.ko.zst").write_text("")
    (dkms / "nvidia-uvm.ko.zst").write_text("")
    (tmp_path / "modules" / "6.8.0-48-generic" / "kernel").mkdir(parents=True)
    assert hostprobe.boot_kernels(str(boot)) == ["6.8.0-45-generic", "6.8.0-48-generic"]
    assert hostprobe.kernel_modules(str(tmp_path / "modules")) == {
        "6.8.0-45-generic": ["updates/dkms/nvidia.ko.zst"],
        "6.8.0-48-generic": [],
    }


def test_secure_boot_from_the_efi_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostprobe, "_find_binary", lambda name: None)  # no mokutil
    var = tmp_path / "SecureBoot"
    var.write_bytes(b"\x06\x00\x00\x00\x01")
    assert hostprobe.secure_boot([], str(var)) == {"enabled": True, "evidence": str(var)}
    var.write_bytes(b"\x06\x00\x00\x00\x00")
    assert hostprobe.secure_boot([], str(var))["enabled"] is False
    assert hostprobe.secure_boot([], str(tmp_path / "absent")) == {"enabled": None, "evidence": None}


def test_secure_boot_refuses_a_driver_install_unless_the_dkms_key_is_enrolled() -> None:
    on = {"enabled": True, "evidence": "mokutil --sb-state"}
    bare_data = json.loads(CAPTURE.read_text())
    # Before any driver: the GPUs are PCI ids only.
    bare_data["driver"]["kernel_module"].update(loaded=False, version=None, flavor=None, evidence=[])
    bare_data["driver"]["version"] = None
    bare_data["source"] = "pci"
    bare_data["stack"]["secure_boot"] = on
    bare = parse_probe(json.dumps(bare_data))
    with pytest.raises(
        ConfigError,
        match=r"^gpu-1: Secure Boot is on and nvidia-driver-580-open builds .*provision\.secure_boot_mok: true",
    ):
        plan(config(), bare)
    assert plan(config(secure_boot_mok=True), bare).to_json()["stack"]["driver"]["action"] == "install"
    # A driver that is already loaded is signed or Secure Boot would not have loaded it: adopted as before.
    assert plan(config(), report(secure_boot=on)).to_json()["stack"]["driver"]["action"] == "adopt"


def test_a_driver_that_answers_is_loaded_even_without_proc_driver_nvidia() -> None:
    data = json.loads(CAPTURE.read_text())
    data["driver"]["kernel_module"].update(loaded=False, version=None, evidence=[])
    data["stack"]["runfile_markers"] = ["/var/log/nvidia-installer.log"]
    facts = classify(parse_probe(json.dumps(data)))
    assert (facts.owner, facts.loaded, facts.answers) == ("runfile", "580.159.04", True)
