"""The whole pyinfra deploy on the fake connector for brownfield hosts: the probe in the converged check's
first read (the real H200's, with its stack part changed to what the host shape reports) decides which
operations are planned."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

import pyinfra
from ms4fleet import verdicts
from ms4fleet.config import HostConfig
from ms4fleet.hostplan import plan_for_data
from ms4fleet.provision import move_script
from tests.pyinfra import harness

PROBE = Path(__file__).parents[1] / "data" / "h200" / "2026-12-04-brownfield" / "probe.json"
HOST_DATA: dict[str, Any] = {
    "ms4fleet_gpu": {"kind": "h200-sxm", "count": 1},
    "ms4fleet_runtime": {"kind": "docker"},
    "ms4fleet_serving": {"open_endpoint": True},
    "ms4fleet_weights": {"source": "path", "path": "/srv/ms4fleet/share", "revision": "5e" * 20},
}


def responses(extra: dict[str, str] | None = None, name: str = "gpu-1", **stack: Any) -> dict[str, str]:
    """The fake host's canned outputs: the real H200's probe with ``stack`` changed, and ``extra``."""
    probe = json.loads(PROBE.read_text())
    probe["stack"].update(stack)
    answer = ["--ms4fleet-- os", "ID=ubuntu", 'VERSION_ID="24.04"', "--ms4fleet-- probe", json.dumps(probe)]
    verdicts.forget(f"@fake/{name}")
    return {"--ms4fleet-- os": "\n".join(answer) + "\n", **(extra or {})}


def deploy(host_data: dict[str, Any], extra: dict[str, str] | None = None, **stack: Any) -> dict[str, Any]:
    return harness.plan(host_data, responses(extra, **stack))


def test_the_h200s_own_driver_and_a_preinstalled_docker_ce_are_adopted() -> None:
    planned = deploy(HOST_DATA, packages={"docker-ce": "5:28.1.1-1~ubuntu.24.04~noble", "containerd.io": "1.7.27-1"})
    assert not [name for name in planned if "nvidia-driver" in name or "docker.io" in name], list(planned)
    assert "install nvidia-container-toolkit" in planned
    assert "docker daemon.json (merged)" in planned
    assert planned["docker running"] != "noop"
    assert "/etc/modprobe.d/ms4fleet-blacklist-nouveau.conf" not in planned


def test_without_docker_ce_docker_io_is_installed_and_a_runfile_of_another_branch_is_taken_over() -> None:
    data = {**HOST_DATA, "ms4fleet_provision": {"driver_branch": 570, "driver_version": "570.195.03",
                                                "driver_takeover": True}}  # fmt: skip
    planned = deploy(data, runfile_markers=["/usr/bin/nvidia-uninstall"])
    assert planned["install docker.io containerd"] != "noop"
    assert planned["driver takeover: uninstall the runfile's"] == [
        "test ! -e /usr/bin/nvidia-uninstall || /usr/bin/nvidia-uninstall --silent"
    ]
    order = list(planned)
    assert order.index("driver takeover: uninstall the runfile's") < order.index("install nvidia-driver-570-open")


def test_a_refused_host_plans_only_its_refusal() -> None:
    data = {**HOST_DATA, "ms4fleet_provision": {"driver_branch": 570, "driver_version": "570.195.03"}}
    assert list(deploy(data)) == ["ms4fleet: host check"]


def test_a_held_driver_of_an_older_build_is_moved_to_the_pin_past_its_hold() -> None:
    older = {"nvidia-driver-580-open": "580.82.07-1"}
    # The move op's own dpkg read: the package, held, at the older build.
    at = {"nvidia-driver-580-open 2>/dev/null": "nvidia-driver-580-open\t580.82.07-1\thi \n"}
    planned = deploy(HOST_DATA, at, packages=older, module_owner="nvidia-driver-580-open", module_file_version=None)
    move = "move held driver packages to their pinned version"
    # The core's script: apt's candidate checked against the pin, then one install past the hold.
    pins = plan_for_data(HostConfig.from_host_data("gpu-1", HOST_DATA), HOST_DATA).provision.group_pins()
    script = move_script(pins, ("nvidia-driver-580-open",))
    assert planned[move] == [f"sh -c {shlex.quote(script)}"], planned[move]
    assert script.rstrip().endswith("--allow-change-held-packages --allow-downgrades nvidia-driver-580-open")
    order = list(planned)
    assert (
        order.index(move) < order.index("install nvidia-driver-580-open") < order.index("reboot if the driver needs it")
    )
    # At the pin: nothing to move.
    pinned = {"nvidia-driver-580-open 2>/dev/null": "nvidia-driver-580-open\t580.95.05-1\thi \n"}
    assert deploy(HOST_DATA, pinned, packages=older, module_owner="nvidia-driver-580-open")[move] == "noop"


def test_hosts_that_plan_other_packages_fit_one_operation_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyinfra's CLI names an operation by the lines of its call stack (its API, which the other tests use, by
    its index), and orders every host's operations in one DAG. In the packages loop, a host that installs and
    holds the driver beside one that adopts its own (no driver operations) paired the loop's install and hold
    calls differently: a cycle, and the deploy of such a fleet stopped before it began."""
    monkeypatch.setattr(pyinfra, "is_cli", True)
    takeover = {**HOST_DATA, "ms4fleet_provision": {"driver_branch": 570, "driver_version": "570.195.03",
                                                    "driver_takeover": True}}  # fmt: skip
    order = harness.fleet_order(
        {
            "adopts": (HOST_DATA, responses(name="adopts")),
            "installs": (takeover, responses(name="installs", runfile_markers=["/usr/bin/nvidia-uninstall"])),
        }
    )
    names = [name.removeprefix("ms4fleet | ") for names in order for name in names]
    assert "install nvidia-driver-570-open" in names and "hold nvidia-driver-570-open" in names, names
