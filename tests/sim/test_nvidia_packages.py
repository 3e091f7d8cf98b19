"""The simulated NVIDIA packages on real sim hosts: apt trust, the driver's reboot, nvidia-smi, and the
fabric manager's version and NVSwitch rules."""

from __future__ import annotations

import pytest

from ms4fleet.catalog import MIB, gpu_kinds
from ms4fleet_sim import aptrepo
from ms4fleet_sim.profiles import DRIVER_RESERVED_BYTES
from tests.support.simhosts import BARE, NVIDIA_SOURCES, DriverHost, SimFleet, SimHost

pytestmark = pytest.mark.sim

QUERY = "index,name,uuid,memory.total,memory.used,memory.free,memory.reserved,driver_version,pci.bus_id"


def test_apt_refuses_the_unsigned_repository(sim_fleet: SimFleet) -> None:
    host = sim_fleet[BARE]
    host.sudo(f"printf 'Types: deb\\nURIs: {aptrepo.NVIDIA_UNSIGNED_URL}\\nSuites: /\\n' > {NVIDIA_SOURCES}")
    try:
        update = host.sudo("apt-get update", check=False)
        assert "is not signed" in update.stdout + update.stderr
        install = host.sudo("apt-get install -y nvidia-driver-580-open", check=False)
        assert install.rc != 0
        assert "Unable to locate package nvidia-driver-580-open" in install.stderr
        assert host.run("dpkg-query -W nvidia-driver-580-open", check=False).rc != 0
    finally:
        host.sudo(f"rm -f {NVIDIA_SOURCES} && apt-get update -q")


def test_driver_installs_from_the_signed_repo_and_asks_for_a_reboot(driver_hgx: DriverHost) -> None:
    host = driver_hgx.host
    status = host.run("dpkg-query -W -f '${Status} ${Version}' nvidia-driver-580-open").stdout
    assert status == "install ok installed 580.95.05-1"
    assert driver_hgx.reboot_required
    # Installed but not loaded until the reboot, as on a real host.
    assert driver_hgx.before_reboot.rc == 9
    assert "couldn't communicate with the NVIDIA driver" in driver_hgx.before_reboot.stdout
    # After the reboot the request is gone and the module is loaded.
    assert host.run("test -e /var/run/reboot-required", check=False).rc == 1
    assert "Kernel driver in use: nvidia" in host.run("lspci -k -s 18:00.0").stdout


def test_nvidia_smi_reports_the_profile_gpus_and_memory(driver_hgx: DriverHost) -> None:
    host = driver_hgx.host
    kind = gpu_kinds()["h200-sxm"]
    rows = [
        line.split(", ")
        for line in host.run(f"nvidia-smi --query-gpu={QUERY} --format=csv,noheader,nounits").stdout.splitlines()
    ]
    assert [row[0] for row in rows] == [str(i) for i in range(8)]
    for row in rows:
        assert row[1] == kind.name
        assert row[3] == str(kind.memory_mib)
        assert (int(row[4]), int(row[6])) == (0, 615)
        assert int(row[5]) == (kind.memory_bytes - DRIVER_RESERVED_BYTES) // MIB
        assert row[7] == "580.95.05"
    assert rows[0][8] == "00000000:18:00.0"
    assert host.run("nvidia-smi -L").stdout.count("NVIDIA H200 (UUID: GPU-") == 8
    full = host.run("nvidia-smi -q").stdout
    assert "Driver Version                            : 580.95.05" in full
    assert "CUDA Version                              : 13.0" in full
    assert "Total                             : 143771 MiB" in full
    topo = host.run("nvidia-smi topo -m").stdout.splitlines()
    assert topo[1].split("\t")[1:9] == [" X ", *["NV18"] * 7]
    header = host.run("nvidia-smi --query-gpu=memory.total --format=csv").stdout.splitlines()
    assert header == ["memory.total [MiB]", *["143771 MiB"] * 8]
    bad = host.run("nvidia-smi --query-gpu=bogus --format=csv", check=False)
    assert (bad.rc, bad.stdout.strip()) == (2, 'Field "bogus" is not a valid field to query.')


def _fabric_manager(host: SimHost, version: str) -> tuple[int, str]:
    host.apt_install(f"nvidia-fabricmanager-580={version}-1")
    start = host.sudo("systemctl start nvidia-fabricmanager", check=False)
    journal = host.sudo("journalctl -u nvidia-fabricmanager -n 5 --no-pager -o cat").stdout
    return start.rc, journal


def test_fabric_manager_fails_on_version_mismatch_and_runs_on_match(driver_hgx: DriverHost) -> None:
    host = driver_hgx.host
    rc, journal = _fabric_manager(host, "580.82.07")
    assert rc != 0
    assert (
        "fabric manager NVIDIA GPU driver interface version 580.82.07 don't match with driver version 580.95.05"
        in journal
    )
    assert host.run("systemctl is-failed nvidia-fabricmanager").stdout.strip() == "failed"
    rc, journal = _fabric_manager(host, "580.95.05")
    assert rc == 0
    assert host.run("systemctl is-active nvidia-fabricmanager").stdout.strip() == "active"
    assert "Successfully configured all the available NVSwitches" in journal


def test_fabric_manager_has_nothing_to_do_without_nvswitch(driver_pcie: DriverHost) -> None:
    host = driver_pcie.host
    assert host.run("nvidia-smi --query-gpu=name --format=csv,noheader").stdout == "NVIDIA H100 NVL\nNVIDIA H100 NVL\n"
    rc, journal = _fabric_manager(host, "580.95.05")
    assert rc != 0
    assert "NV_WARN_NOTHING_TO_DO" in journal


def test_open_and_proprietary_flavours_are_distinct_packages(driver_hgx: DriverHost) -> None:
    host = driver_hgx.host
    shown = host.run("apt-cache show nvidia-driver-580 nvidia-driver-580-open nvidia-driver-570-open").stdout
    assert "Provides: nvidia-driver-binary, nvidia-kernel-open-580" in shown
    assert "Provides: nvidia-driver-binary, nvidia-kernel-580" in shown
    module = host.run("cat /usr/lib/nvidia-sim/kernel-module.json").stdout
    assert '"flavor": "open"' in module and '"license": "Dual MIT/GPL"' in module


def test_a_driver_upgrade_is_a_version_mismatch_until_reboot(sim_fleet: SimFleet, driver_pcie: DriverHost) -> None:
    host = driver_pcie.host
    host.apt_install("nvidia-driver-570-open")
    host.reboot()
    assert (
        host.run("nvidia-smi --query-gpu=driver_version --format=csv,noheader").stdout.splitlines()[0] == "570.195.03"
    )
    host.apt_install("nvidia-driver-580-open")
    stale = host.run("nvidia-smi", check=False)
    assert stale.rc == 18
    assert "Driver/library version mismatch" in stale.stdout
    host.reboot()
    assert host.run("nvidia-smi --query-gpu=driver_version --format=csv,noheader").stdout.splitlines()[0] == "580.95.05"
