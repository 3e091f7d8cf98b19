"""Fixtures for the simulated-fleet tests: the session fleet, fault switches, and hosts provisioned to a
known point (driver installed and loaded; Docker with the GPU toolkit and the stand-in image)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ms4fleet_sim.ssh import Result
from ms4fleet_sim.testing import (  # noqa: F401  (fixtures are found by name)
    SimFleet,
    SimHost,
    add_nvidia_repo,
    install_docker,
    load_standin,
    sim_faults,
    sim_fleet,
)

HGX = "pytest-1"  # 8 x H200 SXM, NVSwitch
PCIE = "pytest-2"  # 2 x H100 NVL, no NVSwitch
BARE = "pytest-3"  # never provisioned by these tests


@dataclass
class DriverHost:
    host: SimHost
    before_reboot: Result  # `nvidia-smi` right after the package install, before the reboot it asked for
    reboot_required: bool


def provision_driver(host: SimHost, package: str = "nvidia-driver-580-open") -> DriverHost:
    add_nvidia_repo(host)
    host.apt_install(package)
    reboot_required = host.run("test -f /var/run/reboot-required", check=False).rc == 0
    before = host.run("nvidia-smi", check=False)
    host.reboot()
    return DriverHost(host, before, reboot_required)


@pytest.fixture(scope="session")
def driver_hgx(sim_fleet: SimFleet) -> DriverHost:
    """The HGX host with the 580 open driver installed from the signed repo and loaded by a reboot."""
    return provision_driver(sim_fleet[HGX])


@pytest.fixture(scope="session")
def driver_pcie(sim_fleet: SimFleet) -> DriverHost:
    return provision_driver(sim_fleet[PCIE])


@pytest.fixture(scope="session")
def docker_hgx(driver_hgx: DriverHost) -> SimHost:
    """The HGX host with docker.io, the container toolkit (nvidia runtime configured) and the stand-in image."""
    host = driver_hgx.host
    install_docker(host)
    load_standin(host)
    host.sudo("mkdir -p /srv/models")
    return host
