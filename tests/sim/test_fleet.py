"""A fleet from `ms4fleet sim up`: real systemd hosts over SSH, inventories for both engines, reboots,
and a `down` that leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ms4fleet.inventory import load_inventory
from ms4fleet_sim import dockercli, inventories
from tests.support.simhosts import SimFleet

pytestmark = pytest.mark.sim


def test_hosts_answer_ssh_with_systemd_running(sim_fleet: SimFleet) -> None:
    for name, host in sim_fleet.hosts.items():
        out = host.run("systemctl is-system-running; hostname; id -un; sudo -n id -un").stdout.split()
        assert out == ["running", name, "ms4fleet", "root"]
        assert host.run("ps -p 1 -o comm=").stdout.strip() == "systemd"


def test_each_host_has_its_gpu_profile(sim_fleet: SimFleet) -> None:
    for host in sim_fleet.hosts.values():
        profile = json.loads(host.run("cat /etc/nvidia-sim/profile.json").stdout)
        assert (profile["kind"], profile["count"], profile["host"]) == (host.gpu_kind, host.gpu_count, host.name)
        assert len(profile["gpus"]) == host.gpu_count
        assert len({gpu["uuid"] for gpu in profile["gpus"]}) == host.gpu_count
    hgx = json.loads(sim_fleet["pytest-1"].run("cat /etc/nvidia-sim/profile.json").stdout)
    pcie = json.loads(sim_fleet["pytest-2"].run("cat /etc/nvidia-sim/profile.json").stdout)
    assert (hgx["nvswitch"], len(hgx["nvswitches"])) == (True, 4)
    assert (pcie["nvswitch"], pcie["nvswitches"]) == (False, [])


def test_before_the_driver_lspci_shows_the_gpus_and_nvidia_smi_is_absent(sim_fleet: SimFleet) -> None:
    host = sim_fleet["pytest-3"]
    lines = host.run("lspci -Dn -d 10de:").stdout.splitlines()
    assert lines == ["0000:18:00.0 0302: 10de:2331 (rev a1)", "0000:2a:00.0 0302: 10de:2331 (rev a1)"]
    assert host.run("command -v nvidia-smi", check=False).rc == 1
    assert host.run("lspci -d 10de: -nn").stdout.startswith(
        "18:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 PCIe] [10de:2331]"
    )
    # The real devices of the machine are still listed by the real lspci.
    assert host.run("lspci -n").stdout.count("\n") > 2


def test_inventories_load_with_the_core_loader(sim_fleet: SimFleet) -> None:
    py_path, yml_path = inventories.write(sim_fleet.fleet, sim_fleet.record)
    for path in (py_path, yml_path):
        loaded = {spec.name: spec for spec in load_inventory(path)}
        assert sorted(loaded) == ["pytest-1", "pytest-2", "pytest-3"]
        for name, host in sim_fleet.hosts.items():
            spec = loaded[name]
            assert spec.address == ("127.0.0.1", host.endpoint.port)
            assert (spec.config.gpu.kind, spec.config.gpu.count) == (host.gpu_kind, host.gpu_count)
            repo = spec.config.provision.nvidia_apt_repo
            assert repo is not None and repo.url == "http://ms4fleet-sim-repo/nvidia/"
            assert spec.config.runtime.image == inventories.STANDIN_IMAGE


def test_pyinfra_inventory_connects_with_strict_host_keys(sim_fleet: SimFleet) -> None:
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all
    from pyinfra.api.facts import get_facts
    from pyinfra.facts.server import Hostname

    py_path, _ = inventories.write(sim_fleet.fleet, sim_fleet.record)
    namespace: dict[str, object] = {}
    exec(compile(py_path.read_text(), str(py_path), "exec"), namespace)
    hosts, data = namespace["sim"]  # type: ignore[misc]
    inventory = Inventory((list(hosts), data))
    state = State(inventory, Config())
    connect_all(state)
    assert not state.failed_hosts
    names = {host.name: value for host, value in get_facts(state, Hostname).items()}
    assert names == {name: name for name in sim_fleet.hosts}


def test_reboot_keeps_disk_state_and_clears_run(sim_fleet: SimFleet) -> None:
    host = sim_fleet["pytest-3"]
    host.sudo("echo kept > /var/lib/ms4fleet-reboot-marker && echo lost > /run/ms4fleet-reboot-marker")
    boot_before = host.run("systemctl show -p UserspaceTimestampMonotonic --value").stdout
    host.reboot()
    assert host.run("cat /var/lib/ms4fleet-reboot-marker").stdout == "kept\n"
    assert host.run("test -e /run/ms4fleet-reboot-marker", check=False).rc == 1
    assert host.run("systemctl is-system-running --wait").stdout.strip() == "running"
    assert host.run("systemctl show -p UserspaceTimestampMonotonic --value").stdout != boot_before
    host.sudo("rm /var/lib/ms4fleet-reboot-marker")


def _fleet_objects(name: str) -> dict[str, list[str]]:
    label = f"{dockercli.FLEET_LABEL}={name}"
    return {kind: dockercli.list_ids(kind, label) for kind in ("container", "network", "volume")}


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ms4fleet_sim", *args, "--root", str(root)], capture_output=True, text=True, check=False
    )


def test_cli_up_status_down_leaves_no_container_network_or_volume(tmp_path: Path) -> None:
    up = _cli(tmp_path, "up", "--fleet", "pytest-cli", "--hosts", "1", "--gpus", "b200x8")
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.startswith("pytest-cli-1\t127.0.0.1:")
        assert (tmp_path / ".sim/pytest-cli/inventory.py").exists()
        assert oct((tmp_path / ".sim/id_ed25519").stat().st_mode & 0o777) == "0o600"
        rows = json.loads(_cli(tmp_path, "status", "--fleet", "pytest-cli", "--json").stdout)
        assert [(r["role"], r["state"], r["gpus"], r["systemd"]) for r in rows] == [
            ("host", "running", "b200:8", "running"),
            ("mirror", "running", "", ""),
            ("registry", "running", "", ""),
            ("repo", "running", "", ""),
        ]
        # The controller reaches hosts over SSH and the fleet's services over HTTP, all on loopback.
        endpoints = {r["role"]: r["endpoint"].split(":")[0] for r in rows}
        assert endpoints == {
            "host": "ssh 127.0.0.1",
            "mirror": "http 127.0.0.1",
            "registry": "http 127.0.0.1",
            "repo": "",
        }
        mirror = next(r["endpoint"] for r in rows if r["role"] == "mirror").split()[1]
        record = json.loads((tmp_path / ".sim/pytest-cli/fleet.json").read_text())
        assert record["mirror_url"] == f"http://{mirror}"
        objects = _fleet_objects("pytest-cli")
        assert (len(objects["container"]), len(objects["network"]), len(objects["volume"])) == (4, 1, 1)
    finally:
        down = _cli(tmp_path, "down", "--fleet", "pytest-cli")
    assert down.stdout.strip() == "removed 4 container(s), 1 network(s), 1 volume(s)"
    assert _fleet_objects("pytest-cli") == {"container": [], "network": [], "volume": []}
    for name in (
        "ms4fleet-sim-pytest-cli-1",
        "ms4fleet-sim-pytest-cli-repo",
        "ms4fleet-sim-pytest-cli-mirror",
        "ms4fleet-sim-pytest-cli-registry",
    ):
        assert dockercli.inspect("container", name) is None
    assert dockercli.inspect("network", "ms4fleet-sim-pytest-cli") is None
    assert dockercli.inspect("volume", "ms4fleet-sim-pytest-cli-1-docker") is None
    assert not (tmp_path / ".sim/pytest-cli/inventory.py").exists()


def test_bad_input_is_refused_before_anything_is_touched(tmp_path: Path) -> None:
    bad = _cli(tmp_path, "up", "--fleet", "pytest-bad", "--hosts", "2", "--gpus", "h300x8")
    assert bad.returncode == 2
    assert bad.stderr.startswith("ms4fleet sim: --gpus 'h300x8': unknown GPU kind 'h300'")
    assert _fleet_objects("pytest-bad") == {"container": [], "network": [], "volume": []}
    assert not (tmp_path / ".sim").exists()
