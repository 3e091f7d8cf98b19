"""A held apt driver at another build than the configured one (brownfield profile ``apt-older``: 580.82.07 and
its fabric manager on an 8 x H200 NVSwitch host, both held): the core decides ``upgrade``, the dry runs say so
and change nothing, and each engine's deploy ends on the pinned 580.95.05 (driver and fabric manager), held
again, after the reboot the new driver asks for, with nvidia-smi reporting it; a second run changes nothing.
pyinfra deploys first; the profile applied again puts the old build back for Ansible's site.yml."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ms4fleet_sim import brownfield, inventories
from ms4fleet_sim import fleet as simfleet
from ms4fleet_sim.packages import OLDER_DRIVER
from ms4fleet_sim.profiles import assign_specs, parse_gpu_spec
from tests.ansible import simrun
from tests.pyinfra import simfleet as pyfleet
from tests.sim.test_brownfield_profiles import Brownfield, core_decisions, engine_decisions, started_at

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "upgrade"
PROFILE = "apt-older"
MOVED = ("nvidia-driver-580-open", "nvidia-fabricmanager")
CONFIGURED = "580.95.05"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Brownfield]:
    target = simfleet.Fleet(root=pyfleet.ROOT, name=FLEET)
    simfleet.down(target)
    record = simfleet.up(target, assign_specs([parse_gpu_spec("h200x8")], 1), log=lambda _: None)
    try:
        brownfield.apply(record, record.hosts[0], PROFILE)
        py, yml = inventories.write(target, record)
        yield Brownfield(target, record, py, yml, {PROFILE: record.hosts[0].name})
    finally:
        simfleet.down(target)
        inventories.remove(target)


def failed(output: str) -> str:
    """What a failed run says about it: its fatal and failed lines, then its end."""
    lines = [line for line in output.splitlines() if line.startswith(("fatal:", "failed:")) or "rror" in line]
    return "\n".join(lines[:40]) + "\n...\n" + output[-4000:]


def packages(fleet: Brownfield) -> dict[str, tuple[str, str]]:
    """``{package: (version, dpkg status)}`` of the driver and the fabric manager."""
    out = fleet.sh(PROFILE, "dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n' " + " ".join(MOVED))
    return {row[0]: (row[1], row[2]) for row in (line.split() for line in out.splitlines())}


def smi(fleet: Brownfield) -> list[str]:
    return fleet.sh(PROFILE, "nvidia-smi --query-gpu=driver_version --format=csv,noheader").split()


def assert_old_build(fleet: Brownfield) -> None:
    assert packages(fleet) == {name: (f"{OLDER_DRIVER.version}-1", "hi") for name in MOVED}
    assert smi(fleet) == [OLDER_DRIVER.version] * 8


def assert_upgraded(fleet: Brownfield, container_started: str) -> None:
    """On the pinned build, held, rebooted into it (the container restarted) and nvidia-smi reports it."""
    assert packages(fleet) == {name: (f"{CONFIGURED}-1", "hi") for name in MOVED}
    assert set(MOVED) <= set(fleet.sh(PROFILE, "apt-mark showhold").split())
    assert started_at(fleet.target.container(fleet.hosts[PROFILE])) != container_started
    assert smi(fleet) == [CONFIGURED] * 8
    assert fleet.sh(PROFILE, "systemctl is-active nvidia-fabricmanager").strip() == "active"


def test_the_core_and_both_dry_runs_decide_upgrade_and_change_nothing(
    fleet: Brownfield, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_old_build(fleet)
    core = core_decisions(fleet, PROFILE, tmp_path, capsys)
    driver = next(line for line in core if line.startswith("driver: "))
    assert driver.startswith(f"driver: upgrade: driver {OLDER_DRIVER.version} ("), core
    assert f"installed by package nvidia-driver-580-open: moved to nvidia-driver-580-open {CONFIGURED}" in driver
    name = fleet.hosts[PROFILE]
    dry = pyfleet.pyinfra(pyfleet.Fleet(fleet.target, fleet.record, fleet.py), "--dry")
    check = simrun.playbook(fleet.yml, "site.yml", "--check")
    for engine, run in (("pyinfra", dry), ("ansible", check)):
        assert run.rc == 0, f"{engine}: {failed(run.output)}"
        printed = engine_decisions(run.output, name)
        assert any(line.startswith(driver) for line in printed), f"{engine}: {printed} {failed(run.output)}"
    assert_old_build(fleet)


def test_pyinfra_then_ansible_move_the_held_driver_to_its_pin_and_reboot_once(fleet: Brownfield) -> None:
    container = fleet.target.container(fleet.hosts[PROFILE])
    py = pyfleet.Fleet(fleet.target, fleet.record, fleet.py)
    before = started_at(container)
    run = pyfleet.pyinfra(py)
    assert run.rc == 0, f"{failed(run.output)}"
    assert "move held driver packages to their pinned version" in run.output
    assert_upgraded(fleet, before)
    again = pyfleet.pyinfra(py)
    assert again.rc == 0 and again.changed_ops() == 0, f"{failed(again.output)}"
    assert "converged (nothing to do)" in again.output
    after = started_at(container)
    # The old build back, held and loaded: the deployed host is not converged any more, and site.yml moves it.
    brownfield.apply(fleet.record, fleet.record.hosts[0], PROFILE)
    assert_old_build(fleet)
    site = simrun.playbook(fleet.yml, "site.yml")
    assert site.rc == 0, f"{failed(site.output)}"
    assert "Move held driver packages to their pinned version" in site.output
    assert_upgraded(fleet, after)
    rerun = simrun.playbook(fleet.yml, "site.yml")
    assert rerun.rc == 0 and rerun.changed() == 0, f"{failed(rerun.output)}"


def test_a_pin_to_a_build_no_apt_source_has_is_refused_with_one_line_and_moves_nothing(
    fleet: Brownfield, tmp_path: Path
) -> None:
    """The host runs the pinned 580.95.05 (the test above); a pin to a build the repository does not publish
    makes apt's candidate the installed build: each engine's move refuses with the core's one line instead
    of installing another build or nothing (and repeating the move on every run)."""
    missing = "580.105.08"
    py_text, yml_text = fleet.py.read_text(), fleet.yml.read_text()
    opening = "'ms4fleet_provision': {"
    assert py_text.count(opening) == 1
    py = tmp_path / "inventory.py"
    py.write_text(py_text.replace(opening, f"{opening}'driver_version': {missing!r},"), encoding="utf-8")
    doc = yaml.safe_load(yml_text)
    for group in doc["all"]["children"].values():
        group["vars"]["ms4fleet_provision"]["driver_version"] = missing
    yml = tmp_path / "inventory.yml"
    yml.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    line = (
        f"nvidia-driver-580-open: no build matching its pin {missing}-* in the apt sources (apt's candidate:"
        f" {CONFIGURED}-1): publish that build or pin a version the repository has"
    )
    container = fleet.target.container(fleet.hosts[PROFILE])
    before = started_at(container)
    pyinfra_run = pyfleet.pyinfra(pyfleet.Fleet(fleet.target, fleet.record, py))
    assert pyinfra_run.rc != 0 and line in pyinfra_run.output, failed(pyinfra_run.output)
    site = simrun.playbook(yml, "site.yml")
    assert site.rc != 0 and line in site.output, failed(site.output)
    # Nothing moved: the pinned build, held, loaded; no reboot.
    assert packages(fleet) == {name: (f"{CONFIGURED}-1", "hi") for name in MOVED}
    assert smi(fleet) == [CONFIGURED] * 8
    assert started_at(container) == before
