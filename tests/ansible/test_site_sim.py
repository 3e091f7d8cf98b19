"""End to end on a 3-host simulated fleet: ``ansible-playbook -i INVENTORY playbooks/site.yml`` from bare
hosts to verified endpoints, asserted ON the hosts; a second run reports changed=0 (the core's converged
check leaves every host out of the roles); a host whose GPU is taken by a co-tenant fails its headroom gate
while the other hosts complete."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ansible import simassets, simrun
from tests.pyinfra import simfleet

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "ansible-e2e"
UNITS = [f"ms4fleet-vllm-{i}.service" for i in range(4)]


class Site:
    def __init__(self, fleet: simfleet.Fleet) -> None:
        self.fleet = fleet
        self.extra = simassets.extra_vars()
        self.first = self.run()

    def run(self, *args: str) -> simrun.Run:
        return simrun.playbook(self.fleet.inventory.with_suffix(".yml"), "site.yml", "-e", f"@{self.extra}", *args)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    simfleet.simfleet.down(simfleet.simfleet.Fleet(root=simfleet.ROOT, name=FLEET))
    fleet = simfleet.ensure_fleet(FLEET, 3)
    try:
        yield Site(fleet)
    finally:
        fleet.down()


def test_first_run_converges_every_host_to_verified_endpoints(site: Site) -> None:
    assert site.first.rc == 0, site.first.output[-3000:]
    fleet = site.fleet
    for name in fleet.hosts:
        simfleet.assert_serving(fleet, name, replicas=len(UNITS))
    assert "failed=0" in site.first.output
    assert site.first.output.count("ms4fleet-vllm-3.service: True") == 3, site.first.output[-2000:]


def test_second_run_changes_nothing(site: Site) -> None:
    again = site.run()
    assert again.rc == 0, again.output[-3000:]
    assert again.changed() == 0, again.recap()
    assert set(again.recap()) == set(site.fleet.hosts)
    # The core's converged check left every host out of the roles (provision, serve and verify plays).
    assert again.output.count("skipping: no hosts matched") == 3, again.output[-3000:]


def test_a_host_without_headroom_fails_alone(site: Site) -> None:
    fleet = site.fleet
    busy, other = fleet.hosts[1], fleet.hosts[0]
    with simfleet.gpu0_taken(fleet, busy):
        for name in (busy, other):
            fleet.sh(name, "systemctl stop ms4fleet-vllm-0.service")
        result = site.run()
        assert result.rc != 0
        recap = result.recap()
        assert recap[busy]["failed"] == 1 and recap[other]["failed"] == 0, recap
        assert f"{busy}: headroom: replica 0 (ms4fleet-vllm-0.service) does not fit" in result.output
        assert fleet.sh(other, "systemctl is-active ms4fleet-vllm-0.service").strip() == "active"
        assert fleet.sh(busy, "systemctl is-active ms4fleet-vllm-0.service", check=False).strip() == "inactive"
    healed = site.run()
    assert healed.rc == 0, healed.output[-3000:]
    assert fleet.sh(busy, "systemctl is-active ms4fleet-vllm-0.service").strip() == "active"
