"""Eleven bad inventories (tests/support/badinv.py) through BOTH engines against a 1-host sim fleet (``badinv``):
``pyinfra -y INVENTORY deploy.py`` and ``ansible-playbook -i INVENTORY playbooks/site.yml`` each exit non-zero
with one clear line naming the host and field, and the host is left exactly as it was: its packages, apt,
systemd, Docker and ms4fleet configuration, users and home directories, read through Docker before and after.
pyinfra must not even connect: the host's sshd logs no accepted login during its runs.

The cases are built from the fleet's own good inventories (the ones `ms4fleet sim up` writes), with one
mistake each; the good inventories themselves are run by tests/pyinfra and tests/ansible.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ms4fleet_sim import inventories
from tests.pyinfra import simfleet
from tests.support import badinv

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "badinv"
# What a run that touched the host would have changed: hashes, and sorted listings with sizes and mtimes.
SNAPSHOT = (
    "md5sum /var/lib/dpkg/status /etc/passwd /etc/group; "
    "find /etc/apt /etc/systemd/system /etc/docker /etc/ms4fleet /etc/modprobe.d /srv /var/lib/ms4fleet /home /root "
    "-xdev -printf '%p %s %T@ %m\\n' 2>/dev/null | sort | md5sum"
)
# sshd's record of logins: pyinfra must validate before it connects at all.
SSH_LOGINS = "journalctl -q --no-pager -u ssh -u sshd 2>/dev/null | grep -c 'Accepted' || true"
SSH_STARTED = "journalctl -q --no-pager -u ssh -u sshd 2>/dev/null | grep -c 'Server listening' || true"


@dataclass(frozen=True)
class World:
    fleet: simfleet.Fleet
    host: str
    py_text: str
    yml_text: str

    def snapshot(self) -> str:
        return self.fleet.sh(self.host, SNAPSHOT)

    def count(self, command: str) -> int:
        return int(self.fleet.sh(self.host, command, check=False).strip() or 0)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    fleet = simfleet.ensure_fleet(FLEET, 1)
    try:
        _, yml_path = inventories.paths(fleet.target)
        found = World(fleet, fleet.hosts[0], fleet.inventory.read_text(), yml_path.read_text())
        # The login count means something only if sshd's journal is there to read.
        assert found.count(SSH_STARTED) >= 1
        yield found
    finally:
        fleet.down()


@pytest.mark.parametrize("case", badinv.CASES, ids=[c.name for c in badinv.CASES])
def test_bad_inventory_stops_both_engines_before_the_host_changes(
    world: World, case: badinv.Case, tmp_path: Path
) -> None:
    before, logins = world.snapshot(), world.count(SSH_LOGINS)

    done = badinv.run_pyinfra(badinv.pyinfra_inventory(world.py_text, case, tmp_path))
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert [line.startswith("ms4fleet: error: ") for line in badinv.error_lines(output, case.expect)] == [True]
    assert "Traceback" not in output and "Connecting to hosts" not in output
    assert world.count(SSH_LOGINS) == logins, "pyinfra connected to the host"
    assert world.snapshot() == before

    run = badinv.run_ansible(badinv.ansible_inventory(world.yml_text, case, tmp_path))
    assert run.rc != 0, run.output[-3000:]
    assert badinv.ansible_failed_once(run.output, case.expect), run.output[-3000:]
    assert "Traceback" not in run.output
    # The preflight is the first play's one task: no task ran on the host.
    assert all(row["ok"] == 0 and row["changed"] == 0 for row in run.recap().values()), run.recap()
    assert world.snapshot() == before
