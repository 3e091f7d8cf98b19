"""Provisioning decisions: packages per GPU kind and OS, pins, managed file bytes, daemon.json merge."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ms4fleet import paths
from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.provision import (
    DAEMON_JSON,
    KEYRING,
    NVIDIA_KEY_FINGERPRINT,
    PREFERENCES_FILE,
    OsRelease,
    Pin,
    ProvisionPlan,
    daemon_json,
    daemon_json_apply,
    move_script,
    needs_reboot,
    pinned_moves,
    provision_plan,
    released_holds,
)
from ms4fleet.secrets import env_file_script

UBUNTU_2404 = OsRelease("ubuntu", "24.04")


def host(kind: str = "h200-sxm", count: int = 8, **sections: dict[str, Any]) -> HostConfig:
    data: dict[str, Any] = {"ms4fleet_gpu": {"kind": kind, "count": count}}
    data.update({f"ms4fleet_{k}": v for k, v in sections.items()})
    return HostConfig.from_host_data("gpu-1", data)


def test_os_release_parsing() -> None:
    text = 'PRETTY_NAME="Ubuntu 24.04.3 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\n'
    assert OsRelease.parse(text) == UBUNTU_2404
    assert OsRelease.parse(text).key == "ubuntu2404"


def test_hgx_h200_gets_open_driver_and_fabric_manager_pinned_together() -> None:
    plan = provision_plan(host(), UBUNTU_2404)
    assert plan.driver is not None and plan.driver.names == ("nvidia-driver-580-open",)
    assert plan.fabric_manager is not None and plan.fabric_manager.names == ("nvidia-fabricmanager",)
    # Docker, containerd and the container toolkit are held like the driver: no unattended upgrade restarts
    # the daemons under the replicas.
    assert plan.held == (
        "nvidia-driver-580-open",
        "nvidia-fabricmanager",
        "docker.io",
        "containerd",
        "nvidia-container-toolkit",
    )
    prefs = next(f for f in plan.files if f.path == "/etc/apt/preferences.d/ms4fleet-nvidia")
    assert "Package: nvidia-driver-580-open nvidia-fabricmanager\nPin: version 580.95.05-*\nPin-Priority: 1001\n" in (
        prefs.content
    )
    assert "nvidia-fabricmanager" in plan.enabled_services


def test_b200_adds_nvlsm_and_older_branches_name_the_fabric_manager_by_branch() -> None:
    b200 = provision_plan(host("b200", 8), UBUNTU_2404)
    assert b200.fabric_manager is not None and b200.fabric_manager.names == ("nvidia-fabricmanager", "nvlsm")
    old = provision_plan(host(provision={"driver_branch": 570, "driver_version": "570.172.08"}), UBUNTU_2404)
    assert old.fabric_manager is not None and old.fabric_manager.names == ("nvidia-fabricmanager-570",)


@pytest.mark.parametrize(("kind", "count"), [("h100-pcie", 4), ("h200-nvl", 2), ("h100-sxm", 4)])
def test_no_fabric_manager_without_nvswitch(kind: str, count: int) -> None:
    plan = provision_plan(host(kind, count), UBUNTU_2404)
    assert plan.fabric_manager is None
    assert "nvidia-fabricmanager" not in plan.enabled_services


def test_nvidia_repo_per_os_and_signed_by_keyring() -> None:
    for os_release, key in [(OsRelease("ubuntu", "22.04"), "ubuntu2204"), (OsRelease("debian", "12"), "debian12")]:
        plan = provision_plan(host(), os_release)
        assert plan.nvidia_repo.key_url == (
            f"https://developer.download.nvidia.com/compute/cuda/repos/{key}/x86_64/3bf863cc.pub"
        )
        assert plan.nvidia_repo.key_fingerprint == NVIDIA_KEY_FINGERPRINT
        sources = plan.files[0]
        assert sources.content.endswith(
            f"Types: deb\nURIs: https://developer.download.nvidia.com/compute/cuda/repos/{key}/x86_64/\n"
            f"Suites: /\nSigned-By: {KEYRING} {NVIDIA_KEY_FINGERPRINT}\n"
        )


def test_unsupported_os_is_refused_with_the_host_named() -> None:
    with pytest.raises(ConfigError, match=r"^gpu-1: os centos 9 is not supported"):
        provision_plan(host(), OsRelease("centos", "9"))


def test_native_runtime_needs_no_docker() -> None:
    plan = provision_plan(host(runtime={"kind": "native"}), UBUNTU_2404)
    assert plan.docker is None and plan.container_toolkit is None
    assert "docker" not in plan.enabled_services
    prefs = next(f for f in plan.files if f.path == PREFERENCES_FILE).content
    assert "docker.io" not in prefs and "nvidia-container-toolkit" not in prefs


def _stanzas(plan: ProvisionPlan) -> dict[str, str]:
    prefs = next(f for f in plan.files if f.path == PREFERENCES_FILE).content
    return {
        block.split("\n")[0].removeprefix("Package: ").split()[0]: block.split("\n")[1].removeprefix("Pin: version ")
        for block in prefs.removeprefix(paths.HEADER).split("\n\n")
    }


@pytest.mark.parametrize(
    ("os", "docker", "containerd"),
    [(OsRelease("debian", "12"), "20.10.*", "1.6.*"), (UBUNTU_2404, "27.5.*", "1.7.*")],
)
def test_the_container_stack_is_pinned_to_the_catalog_series_of_the_os(
    os: OsRelease, docker: str, containerd: str
) -> None:
    assert _stanzas(provision_plan(host(), os)) == {
        "nvidia-driver-580-open": "580.95.05-*",
        "docker.io": docker,
        "containerd": containerd,
        "nvidia-container-toolkit": "1.18.*",
    }
    # Without a managed driver the file still pins the container stack.
    unmanaged = _stanzas(provision_plan(host(provision={"manage_driver": False}), os))
    assert unmanaged == {"docker.io": docker, "containerd": containerd, "nvidia-container-toolkit": "1.18.*"}


def test_the_inventory_may_move_a_series_and_only_to_a_series() -> None:
    moved = host(
        provision={"docker_version": "28.2.*", "containerd_version": "2.*", "container_toolkit_version": "1.17.*"}
    )
    stanzas = _stanzas(provision_plan(moved, UBUNTU_2404))
    assert (stanzas["docker.io"], stanzas["containerd"], stanzas["nvidia-container-toolkit"]) == (
        "28.2.*",
        "2.*",
        "1.17.*",
    )
    for bad in ("27.5.1-0ubuntu3~24.04.2", "*", "27.5.*\nPackage: *", "latest"):
        with pytest.raises(ConfigError) as err:
            host(provision={"docker_version": bad})
        message = str(err.value)
        assert message.startswith("gpu-1: provision.docker_version") and "\n" not in message
        assert "a version series such as 27.5.*" in message or "holds a newline" in message


def test_daemon_json_is_merged_not_overwritten() -> None:
    current = json.dumps({"log-driver": "journald", "runtimes": {"runc-custom": {"path": "/x"}}})
    merged = json.loads(daemon_json(current, host(provision={"docker_daemon_options": {"live-restore": True}})))
    assert merged == {
        "live-restore": True,
        "log-driver": "journald",
        "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}, "runc-custom": {"path": "/x"}},
    }
    # idempotent: merging into the merged file changes no byte
    once = daemon_json(current, host())
    assert daemon_json(once, host()) == once


def test_daemon_json_keeps_containers_through_a_docker_restart() -> None:
    current = json.dumps({"live-restore": False, "log-driver": "journald"})
    assert json.loads(daemon_json(current, host()))["live-restore"] is True
    with pytest.raises(ConfigError, match="turns live-restore off") as refused:
        host(provision={"docker_daemon_options": {"live-restore": False}})
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "none"),
        # Docker's documented SIGHUP set: dockerd applies it in place, no container is touched.
        ({"debug": True}, "reload"),
        ({"labels": ["rack=a"], "registry-mirrors": ["http://mirror:5000"], "max-concurrent-downloads": 6}, "reload"),
        ({"log-driver": "journald"}, "restart"),
        ({"debug": True, "data-root": "/srv/docker"}, "restart"),
        # `features` is reloaded, but the containerd image store takes effect only at start.
        ({"features": {"containerd-snapshotter": True}}, "restart"),
        # Documented as reloaded, but `--gpus` needs dockerd started with the toolkit's hook.
        ({"runtimes": {"crun": {"path": "/usr/bin/crun"}}}, "restart"),
        ({"default-runtime": "nvidia"}, "restart"),
    ],
)
def test_a_daemon_json_change_is_reloaded_when_every_changed_key_is_reloadable(
    options: dict[str, Any], expected: str
) -> None:
    before = daemon_json(json.dumps({"log-opts": {"max-size": "10m"}}), host())
    after = daemon_json(before, host(provision={"docker_daemon_options": options}))
    assert daemon_json_apply(before, after) == expected
    # Formatting alone is no change dockerd needs to see; a Docker with no file yet reloads ours.
    assert daemon_json_apply(json.dumps(json.loads(before)), before) == "none"
    # A Docker with no file yet (adopted) and the toolkit's runtime added: only a restart registers --gpus.
    assert daemon_json_apply(None, daemon_json(None, host())) == "restart"


def test_a_driver_branch_change_releases_the_old_branchs_hold_and_nothing_else() -> None:
    plan = provision_plan(host(provision={"driver_branch": 570, "driver_version": "570.195.03"}), UBUNTU_2404)
    groups = {name: g.names for name, g in (("driver", plan.driver), ("docker", plan.docker)) if g and g.hold}
    held = ["nvidia-driver-580-open", "nvidia-driver-570-open", "docker.io", "linux-image-generic", "nvidia-dkms-580"]
    # The 580 metapackage conflicts with the 570 one apt installs; the plan's own and others' holds stay.
    assert released_holds(groups, held) == ("nvidia-driver-580-open",)
    assert released_holds(groups, ["nvidia-driver-570-open"]) == ()
    # A host where ms4fleet holds no driver (unmanaged, adopted) keeps every hold it has.
    assert released_holds({"docker": ("docker.io",)}, held) == ()


def test_held_driver_packages_off_their_pin_are_moved_to_it_and_nothing_else() -> None:
    plan = provision_plan(host(), UBUNTU_2404)  # 8 x H200: driver and fabric manager pinned to 580.95.05-*
    pins = plan.group_pins()
    assert set(pins) == {"driver", "fabric_manager"}
    at_pin = {"nvidia-driver-580-open": "580.95.05-1", "nvidia-fabricmanager": "580.95.05-0ubuntu1"}
    assert pinned_moves(pins, at_pin) == ()
    # An older build of the same branch and a newer one: both go to the pin (a downgrade too), together.
    older = {"nvidia-driver-580-open": "580.82.07-1", "nvidia-fabricmanager": "580.82.07-1", "docker.io": "1"}
    assert pinned_moves(pins, older) == ("nvidia-driver-580-open", "nvidia-fabricmanager")
    assert pinned_moves(pins, {**at_pin, "nvidia-fabricmanager": "580.105.08-1"}) == ("nvidia-fabricmanager",)
    # Only what is installed moves (apt installs the rest at the pin), and ``only`` narrows it to one group's.
    assert pinned_moves(pins, {"nvidia-driver-580-open": "580.82.07-1"}) == ("nvidia-driver-580-open",)
    assert pinned_moves(pins, older, only=plan.fabric_manager.names if plan.fabric_manager else ()) == (
        "nvidia-fabricmanager",
    )
    # The glob is apt's: 580.95.05-* does not match 580.95.050-1 nor an epoch in front.
    assert pinned_moves(pins, {"nvidia-driver-580-open": "580.95.050-1"}) == ("nvidia-driver-580-open",)
    assert pinned_moves(pins, {"nvidia-driver-580-open": "1:580.95.05-1"}) == ("nvidia-driver-580-open",)
    # Docker and the toolkit are pinned to their series and never moved by this; no driver group, no move.
    assert pinned_moves({"docker": plan.pins}, older) == ()
    unmanaged = provision_plan(host(provision={"manage_driver": False}), UBUNTU_2404)
    assert pinned_moves(unmanaged.group_pins(), {"nvidia-driver-580-open": "580.82.07-1"}) == ()


def _run_move(tmp_path: Path, script: str, candidates: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs the core's move script against a stand-in apt: ``apt-cache policy`` prints each candidate as
    apt 2.x does; ``apt-get`` records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    policy = "".join(
        f'  {name}) printf "%s:\\n  Installed: 1\\n  Candidate: {c}\\n" "$2" ;;\n' for name, c in candidates.items()
    )
    (bin_dir / "apt-cache").write_text(f'#!/bin/sh\ncase "$2" in\n{policy}esac\n')
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/apt-get.args\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=False)


def test_the_move_to_the_pin_is_refused_with_one_line_when_the_pinned_build_is_in_no_apt_source(
    tmp_path: Path,
) -> None:
    pins = provision_plan(host(), UBUNTU_2404).group_pins()  # 580.95.05-*
    moves = ("nvidia-driver-580-open", "nvidia-fabricmanager")
    script = move_script(pins, moves)
    # The pinned build is apt's candidate: one apt-get install past the hold, both packages together.
    done = _run_move(tmp_path, script, {name: "580.95.05-1" for name in moves})
    assert done.returncode == 0, done.stderr
    args = (tmp_path / "apt-get.args").read_text().split()
    assert args[:2] == ["install", "-y"] and args[-2:] == list(moves)
    assert "--allow-change-held-packages" in args and "--allow-downgrades" in args
    (tmp_path / "apt-get.args").unlink()
    # Not in the repository: apt's candidate is the newest build (or none); nothing is installed.
    for candidate in ("580.105.08-1", "(none)"):
        done = _run_move(tmp_path, script, {moves[0]: "580.95.05-1", moves[1]: candidate})
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            f"nvidia-fabricmanager: no build matching its pin 580.95.05-* in the apt sources (apt's candidate:"
            f" {candidate}): publish that build or pin a version the repository has"
        ]
        assert not (tmp_path / "apt-get.args").exists()
    # Only names and globs the core writes reach the shell.
    with pytest.raises(ValueError, match="not a package name and version glob"):
        move_script({"driver": (Pin(("x; reboot",), "1-*"),)}, ("x; reboot",))


def test_daemon_json_that_is_not_json_is_refused() -> None:
    with pytest.raises(ConfigError, match=DAEMON_JSON):
        daemon_json("{broken", host())


def test_reboot_only_when_it_does_something() -> None:
    assert needs_reboot(True, True, None, None)
    assert not needs_reboot(False, True, "580.95.05", "580.95.05")
    assert not needs_reboot(True, False, "580.95.05", "580.95.05")
    assert needs_reboot(False, False, "570.172.08", "580.95.05")


def test_env_file_script_writes_0600_and_reports_changes(tmp_path: Path) -> None:
    config = host(serving={"api_key": {"file": str(tmp_path / "api-key")}})
    (tmp_path / "api-key").write_text("sk-test-123\n")
    (tmp_path / "api-key").chmod(0o600)
    script = env_file_script(config).replace(paths.ETC_DIR, str(tmp_path / "etc"))
    run = lambda: subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)  # noqa: E731
    assert run().stdout == "changed\n"
    assert run().stdout == "unchanged\n"
    env_file = tmp_path / "etc" / "vllm.env"
    assert env_file.read_text() == 'VLLM_API_KEY="sk-test-123"\n'
    assert oct(os.stat(env_file).st_mode & 0o777) == "0o600"
    assert "sk-test-123" not in script
    (tmp_path / "api-key").write_text("sk-rotated\n")
    assert run().stdout == "changed\n"
    assert env_file.read_text() == 'VLLM_API_KEY="sk-rotated"\n'


def test_env_file_script_refuses_a_secret_file_others_can_read(tmp_path: Path) -> None:
    config = host(serving={"api_key": {"file": str(tmp_path / "api-key")}})
    (tmp_path / "api-key").write_text("sk-test-123\n")
    script = env_file_script(config).replace(paths.ETC_DIR, str(tmp_path / "etc"))
    for mode in (0o644, 0o640, 0o604, 0o700):
        (tmp_path / "api-key").chmod(mode)
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
        assert done.returncode == 3 and done.stdout == ""
        assert done.stderr == (
            f"secret file {tmp_path}/api-key must be root's alone: chown root:root {tmp_path}/api-key && "
            f"chmod 600 {tmp_path}/api-key (now: uid/mode {os.getuid()} {mode:o})\n"
        )
        assert "sk-test" not in done.stderr and not (tmp_path / "etc" / "vllm.env").exists()
    (tmp_path / "api-key").chmod(0o400)
    assert subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout == "changed\n"


def test_env_file_script_fails_on_a_missing_secret(tmp_path: Path) -> None:
    config = host(serving={"api_key": {"file": str(tmp_path / "absent")}})
    script = env_file_script(config).replace(paths.ETC_DIR, str(tmp_path / "etc"))
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert done.returncode == 3
    assert "is missing or empty" in done.stderr
    assert not (tmp_path / "etc" / "vllm.env").exists()
