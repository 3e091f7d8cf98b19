"""The eleven bad inventories of tests/support/badinv.py through BOTH engines without Docker: a fleet shaped
like the sim's (its inventories rendered by `ms4fleet_sim.inventories`) whose host's SSH port is closed.
``pyinfra -y INVENTORY deploy.py`` and ``ansible-playbook -i INVENTORY playbooks/site.yml`` each exit non-zero
with one line naming host and field, and neither gets as far as a connection: pyinfra stops before its
"Connecting to hosts" stage, Ansible's recap shows no task run on any host. (The sim test runs the same
cases against a live host and compares its state before and after.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from ms4fleet_sim import inventories
from ms4fleet_sim.fleet import FleetRecord, HostRecord
from tests.support import badinv

# A TCP port nothing listens on: a connection attempt would fail at once, and say so in the output.
CLOSED_PORT = 9


def _record(tmp_path: Path) -> FleetRecord:
    host = HostRecord("badinv-gpu-1", "badinv-gpu-1", CLOSED_PORT, "h200-sxm", 8, True)
    return FleetRecord(
        fleet="badinv",
        network="none",
        repo_container="none",
        user="ms4fleet",
        key_file=str(tmp_path / "key"),
        known_hosts=str(tmp_path / "known_hosts"),
        host_image="none",
        repo_dir=str(tmp_path),
        hosts=[host],
        mirror_url="http://127.0.0.1:9/weights",
        registry="127.0.0.1:9",
        staging_dir=str(tmp_path / "staging"),
    )


@pytest.mark.parametrize("case", badinv.CASES, ids=[c.name for c in badinv.CASES])
def test_bad_inventory_stops_both_engines_before_connecting(case: badinv.Case, tmp_path: Path) -> None:
    record = _record(tmp_path)
    done = badinv.run_pyinfra(badinv.pyinfra_inventory(inventories.render_pyinfra(record), case, tmp_path))
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert [line.startswith("ms4fleet: error: ") for line in badinv.error_lines(output, case.expect)] == [True]
    assert "Traceback" not in output and "Connecting to hosts" not in output

    run = badinv.run_ansible(badinv.ansible_inventory(inventories.render_ansible(record), case, tmp_path))
    assert run.rc != 0, run.output[-3000:]
    assert badinv.ansible_failed_once(run.output, case.expect), run.output[-3000:]
    assert "Traceback" not in run.output and "UNREACHABLE" not in run.output
    assert all(row["ok"] == 0 and row["changed"] == 0 for row in run.recap().values()), run.recap()
