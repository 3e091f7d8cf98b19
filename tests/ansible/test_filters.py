"""The collection's filters hand the roles exactly what the core decides (no decision of their own), and the
roles document every default they have."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.ms4fleet.fleet.plugins.filter.plan import FilterModule

from ms4fleet import apikey
from ms4fleet.config import HostConfig
from ms4fleet.hostplan import host_plan, stack_for
from ms4fleet.probe import parse_probe
from ms4fleet.provision import OsRelease, Pin, daemon_json, daemon_json_apply, move_script, provision_plan
from ms4fleet.secrets import env_file_script
from ms4fleet.serving import plan_host

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())
FILTERS = FilterModule().filters()
UBUNTU_2404 = {"distribution": "Ubuntu", "distribution_version": "24.04", "distribution_major_version": "24"}
DEBIAN_12 = {"distribution": "Debian", "distribution_version": "12.8", "distribution_major_version": "12"}
REVISION = "5e" * 20


def hostvars(kind: str = "h200-sxm", count: int = 8, **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "inventory_hostname": "gpu-1",
        "ansible_host": "10.0.0.1",
        "ms4fleet_gpu": {"kind": kind, "count": count},
        "ms4fleet_weights": {
            "source": "mirror",
            "mirror_url": "https://mirror",
            "revision": REVISION,
            "manifest_sha256": "abababababababababababababababababababababababababababababababab",
        },
    }
    data.update({f"ms4fleet_{name}": value for name, value in sections.items()})
    return data


def config(data: dict[str, Any]) -> HostConfig:
    return HostConfig.from_host_data("gpu-1", {k: v for k, v in data.items() if k.startswith("ms4fleet_")})


@pytest.mark.parametrize(
    ("facts", "os"), [(UBUNTU_2404, OsRelease("ubuntu", "24.04")), (DEBIAN_12, OsRelease("debian", "12"))]
)
def test_provision_plan_is_the_cores(facts: dict[str, str], os: OsRelease) -> None:
    data = hostvars()
    plan = FILTERS["provision_plan"](data, facts)
    core = provision_plan(config(data), os)
    assert plan["os"]["key"] == os.key
    pin = {"names": ["nvidia-driver-580-open", "nvidia-fabricmanager"], "version": "580.95.05-*"}
    assert plan["driver"] == {"names": ["nvidia-driver-580-open"], "hold": True, "pins": [pin]}
    assert plan["fabric_manager"]["names"] == list(core.fabric_manager.names)  # type: ignore[union-attr]
    assert [(f["path"], f["content"], int(f["mode"], 8), f["sha256"]) for f in plan["files"]] == [
        (f.path, f.content, f.mode, f.sha256) for f in core.files
    ]
    assert plan["held"] == list(core.held)
    assert plan["enabled_services"] == list(core.enabled_services)


@pytest.mark.parametrize(
    "data",
    [
        hostvars(),
        hostvars("h100-pcie", 2),
        hostvars("b200", 8),
        hostvars(runtime={"kind": "native"}, provision={"manage_driver": False}),
    ],
)
def test_a_role_owns_every_managed_file(data: dict[str, Any]) -> None:
    """A file the core adds without a role writing it would break engine parity: the kind says which role."""
    plan = FILTERS["provision_plan"](data, UBUNTU_2404)
    assert [f["path"] for f in plan["files"] if f["kind"] == "other"] == []


def test_serving_plan_units_are_the_cores_bytes() -> None:
    data = hostvars()
    plan = FILTERS["serving_plan"](data)
    core = plan_host(config(data))
    assert [r["unit_text"] for r in plan["replicas"]] == [r.unit_text for r in core.replicas]
    assert [r["unit_path"] for r in plan["replicas"]] == [f"/etc/systemd/system/{r.unit_name}" for r in core.replicas]
    assert plan["tp"] == 2 and len(plan["replicas"]) == 4


def test_serving_plan_places_replicas_around_the_gpu_health_modules_exclusions() -> None:
    data = hostvars()
    excluded = [{"gpu": 5, "reason": "unhealthy: a row remap is pending"}]
    plan = FILTERS["serving_plan"](data, None, excluded)
    assert [r["index"] for r in plan["replicas"]] == [0, 1, 3]
    assert plan["health"]["missing_replicas"] == [
        {"index": 2, "gpus": [4, 5], "port": 8002, "reasons": ["GPU 5 unhealthy: a row remap is pending"]}
    ]
    assert FILTERS["serving_plan"](data, None, [])["health"] == {"excluded_gpus": [], "missing_replicas": []}
    with pytest.raises(AnsibleFilterError, match="GPU exclusions must be a list"):
        FILTERS["serving_plan"](data, None, [{"gpu": "5"}])


def test_the_filters_are_views_of_the_host_plan(tmp_path: Path) -> None:
    data = hostvars()
    whole = host_plan(config(data), OsRelease("debian", "12")).to_json()
    provision = FILTERS["provision_plan"](data, DEBIAN_12)
    assert provision["files"] == [f for f in whole["files"] if f["kind"] != "unit"]
    assert provision["held"] == whole["held"] and provision["driver_version"] == "580.95.05"
    serving = FILTERS["serving_plan"](data)
    assert (serving["image"], serving["image_obtain"], serving["image_id"]) == (whole["image"]["ref"], "pull", None)
    # An image archive (the role's vllm_service_image_archive) makes the plan load it when the id differs.
    archive = tmp_path / "vllm.tar"
    with tarfile.open(archive, "w") as tar:
        blob = json.dumps([{"Config": "abc123.json", "RepoTags": [], "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    loaded = FILTERS["serving_plan"](data, str(archive))
    assert (loaded["image_obtain"], loaded["image_archive"], loaded["image_id"]) == (
        "load",
        str(archive),
        "sha256:abc123",
    )
    assert FILTERS["serving_plan"](data, "")["image_obtain"] == "pull"
    # No api_key and not open: the key ms4fleet generates on the controller, uploaded from its file.
    secrets = FILTERS["service_secrets"](data)
    assert secrets["needed"] is True and secrets["uploads"] == []
    assert secrets["generated"] == [
        {"name": "api_key", "source": str(apikey.key_path()), "path": "/etc/ms4fleet/secrets/api_key"}
    ]
    assert apikey.key_path().stat().st_mode & 0o777 == 0o600


def test_daemon_json_merges_into_what_the_host_has() -> None:
    data = hostvars(provision={"docker_daemon_options": {"log-driver": "journald"}})
    current = json.dumps({"data-root": "/srv/docker", "runtimes": {"crun": {"path": "/usr/bin/crun"}}})
    merged = FILTERS["daemon_json"](current, data)
    assert merged == daemon_json(current, config(data))
    parsed = json.loads(merged)
    assert parsed["data-root"] == "/srv/docker"
    assert set(parsed["runtimes"]) == {"crun", "nvidia"}
    assert parsed["log-driver"] == "journald"


def test_how_dockerd_takes_daemon_json_is_the_cores_decision() -> None:
    current = FILTERS["daemon_json"]("", hostvars())
    for options, action in (({"debug": True}, "reload"), ({"log-driver": "journald"}, "restart"), ({}, "none")):
        desired = FILTERS["daemon_json"](current, hostvars(provision={"docker_daemon_options": options}))
        assert FILTERS["daemon_json_apply"](desired, current) == action == daemon_json_apply(current, desired)


def test_the_holds_a_driver_branch_change_releases_are_the_cores() -> None:
    plan = {"driver": {"names": ["nvidia-driver-570-open"], "hold": True}, "fabric_manager": None}
    held = ["nvidia-driver-580-open", "docker.io"]
    assert FILTERS["released_holds"](held, plan) == ["nvidia-driver-580-open"]
    assert FILTERS["released_holds"](held, {"driver": {"names": ["nvidia-driver-570-open"], "hold": False}}) == []


def test_the_held_packages_moved_to_their_pin_are_the_cores() -> None:
    pin = {"names": ["nvidia-driver-580-open", "nvidia-fabricmanager"], "version": "580.95.05-*"}
    plan = {
        "driver": {"names": ["nvidia-driver-580-open"], "hold": True, "pins": [pin]},
        "fabric_manager": {"names": ["nvidia-fabricmanager"], "hold": True, "pins": [pin]},
    }
    lines = [
        "nvidia-driver-580-open\t580.82.07-1\thi ",
        "nvidia-fabricmanager\t580.82.07-1\thi ",
        "docker.io\t26.1.5+dfsg1-9+b9\thi ",
    ]
    assert FILTERS["pinned_moves"](lines, plan) == ["nvidia-driver-580-open", "nvidia-fabricmanager"]
    assert FILTERS["pinned_moves"](lines, plan, "fabric_manager") == ["nvidia-fabricmanager"]
    # Removed with its configuration left (rc): not installed, nothing to move.
    assert FILTERS["pinned_moves"](["nvidia-driver-580-open\t580.82.07-1\trc "], plan) == []
    assert FILTERS["pinned_moves"]([line.replace("82.07", "95.05") for line in lines], plan) == []
    # The role runs the core's script on that list (its refusal is tested in tests/unit/test_provision.py).
    moves = FILTERS["pinned_moves"](lines, plan)
    pins = [Pin(tuple(pin["names"]), pin["version"])]
    assert FILTERS["pinned_move_script"](moves, plan) == move_script(
        {"driver": pins, "fabric_manager": pins}, tuple(moves)
    )


def test_daemon_json_refuses_a_broken_file_with_one_line() -> None:
    with pytest.raises(AnsibleFilterError, match=r"^gpu-1: /etc/docker/daemon.json is not valid JSON"):
        FILTERS["daemon_json"]("{not json", hostvars())


def test_a_misspelt_setting_names_the_host_and_the_fix() -> None:
    data = hostvars()
    data["ms4fleet_provison"] = {}
    with pytest.raises(AnsibleFilterError, match=r"gpu-1: ms4fleet_provison is not an ms4fleet setting; did you mean"):
        FILTERS["provision_plan"](data, UBUNTU_2404)


def test_an_unsupported_release_is_refused() -> None:
    facts = {"distribution": "Ubuntu", "distribution_version": "20.04", "distribution_major_version": "20"}
    with pytest.raises(AnsibleFilterError, match=r"ubuntu 20\.04 is not supported"):
        FILTERS["provision_plan"](hostvars(), facts)


def test_service_secrets_upload_env_refs_and_run_the_cores_script() -> None:
    data = hostvars(serving={"api_key": {"env": "MS4FLEET_TEST_KEY"}})
    secrets = FILTERS["service_secrets"](data)
    assert secrets["uploads"] == [
        {"name": "api_key", "env": "MS4FLEET_TEST_KEY", "path": "/etc/ms4fleet/secrets/api_key"}
    ]
    assert secrets["script"] == env_file_script(config(data))


def test_needs_reboot_is_the_cores() -> None:
    needs = FILTERS["needs_reboot"]
    assert needs(True, True, None, "580.95.05") is True
    assert needs(False, False, "580.95.05", "580.95.05") is False
    assert needs(False, False, "570.195.03", "580.95.05") is True
    assert needs(True, False, "", "") is False


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_documented_in_the_argument_spec(role: str) -> None:
    path = ROOT / "roles" / role / "defaults" / "main.yml"
    defaults = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = specs["main"].get("options", {})
    # A required option has no default by definition; every other one is defaulted in defaults/main.yml.
    assert set(defaults) == {name for name, spec in options.items() if not spec.get("required")}
    assert all(name.startswith(f"{role}_") for name in defaults)
    for name, value in defaults.items():
        if "default" in options[name]:
            assert options[name]["default"] == value, name


OS_VARS_ROLES = yaml.safe_load((ROOT / "roles" / "os_vars" / "vars" / "main.yml").read_text())["os_vars_roles"]


def test_os_vars_loads_every_role_with_per_os_vars_and_each_depends_on_it() -> None:
    assert sorted(OS_VARS_ROLES) == [
        role for role in ROLES if role != "os_vars" and (ROOT / "roles" / role / "vars").is_dir()
    ]
    for role in ROLES:
        if role == "os_vars":
            continue
        meta = yaml.safe_load((ROOT / "roles" / role / "meta" / "main.yml").read_text())
        # Roles with per-OS vars, and every role that plans (it needs the probe os_vars registers), depend on it.
        plans = "provision_plan" in "".join(p.read_text() for p in (ROOT / "roles" / role / "tasks").glob("*.yml"))
        depends = {"role": "ms4fleet.fleet.os_vars"} in (meta.get("dependencies") or [])
        assert depends == (role in OS_VARS_ROLES or plans), role
        assert "first_found" not in (ROOT / "roles" / role / "tasks" / "main.yml").read_text(), role


@pytest.mark.parametrize("role", OS_VARS_ROLES)
def test_every_role_has_vars_for_each_supported_release(role: str) -> None:
    names = {p.name for p in (ROOT / "roles" / role / "vars").iterdir()}
    assert {"Ubuntu-22.04.yml", "Ubuntu-24.04.yml", "Debian-12.yml", "unsupported.yml"} <= names


def test_no_service_secrets_means_no_environment_file() -> None:
    assert FILTERS["service_secrets"](hostvars(serving={"open_endpoint": True}))["needed"] is False
    assert FILTERS["service_secrets"](hostvars(serving={"api_key": {"file": "/etc/ms4fleet/key"}}))["needed"] is True


H200_PROBE = ROOT / "tests" / "data" / "h200" / "2026-12-04-brownfield" / "probe.json"


def test_provision_plan_applies_the_cores_adoption_from_the_registered_probe() -> None:
    """The os_vars role registers the probe; every role's plan then carries the core's decision for it (the real
    H200's driver, owned by nothing on the host, is adopted), and refuses what the core refuses."""
    report = json.loads(H200_PROBE.read_text())
    data = {**hostvars(count=1), "os_vars_probe": {"probe": report, "changed": False}}
    plan = FILTERS["provision_plan"](data, UBUNTU_2404)
    core = host_plan(
        config(data), OsRelease("ubuntu", "24.04"), stack=stack_for(config(data), parse_probe(json.dumps(report)))
    )
    assert plan["driver"] is None and core.group("driver") is None
    assert plan["stack"] == core.to_json()["stack"] and plan["stack"]["driver"]["action"] == "adopt"
    assert plan["driver_version"] == "580.159.04" and plan["driver_before_install"] == []
    assert plan["notes"] == list(core.notes)
    assert FILTERS["provision_plan"](hostvars(count=1), UBUNTU_2404)["driver"] is not None
    refused = {**data, "ms4fleet_provision": {"driver_branch": 570, "driver_version": "570.195.03"}}
    with pytest.raises(AnsibleFilterError, match=r"gpu-1: driver 580\.159\.04 .* is not on driver_branch 570"):
        FILTERS["provision_plan"](refused, UBUNTU_2404)


def test_reboot_refusal_is_the_cores_line_for_the_read_kernels() -> None:
    lines = ["kernel 6.8.0-45-generic", "module /lib/modules/6.8.0-45-generic/updates/dkms/nvidia.ko.zst"]
    assert FILTERS["reboot_refusal"](lines) == ""
    refused = FILTERS["reboot_refusal"]([*lines, "kernel 6.8.0-48-generic"])
    assert refused.startswith("reboot refused: kernel 6.8.0-48-generic")
    assert FILTERS["provision_plan"](hostvars(), UBUNTU_2404)["boot_modules_script"].startswith("for f in /boot/")
