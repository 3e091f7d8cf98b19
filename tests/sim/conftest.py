"""Fixtures for the simulated-fleet tests: the session fleet, fault switches, and hosts provisioned to a
known point (driver installed and loaded; Docker with the GPU toolkit and the stand-in image)."""

from __future__ import annotations

import pytest

from tests.support import simhosts
from tests.support.simhosts import (
    HGX,
    PCIE,
    DriverHost,
    SimFleet,
    SimHost,
    install_docker,
    load_standin,
    provision_driver,
)

# The shared fixtures, found by pytest under these names.
sim_fleet = simhosts.sim_fleet
sim_faults = simhosts.sim_faults


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
    return host
