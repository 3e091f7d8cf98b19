"""The documented quick start, exactly as written, in a fresh copy of the repository.

After ``ms4fleet sim up --hosts 2 --gpus h200x8`` alone, ``pyinfra -y inventory/sim.py deploy.py`` converges
both hosts to verified endpoints and a second run changes nothing; on a new fleet the same holds for
``ansible-playbook -i inventory/sim.yml playbooks/site.yml``. Nothing else runs beside them: the weights mirror
and the registry are the sim fleet's own. The fleet is renamed through MS4FLEET_SIM_FLEET so that a
developer's default fleet is left alone; the commands are not changed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ms4fleet_sim import fleet as simfleet_module
from tests.ansible.simrun import Run as AnsibleRun
from tests.pyinfra import simfleet

pytestmark = [pytest.mark.sim, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FLEET = "quickstart"
SIM_UP = "ms4fleet sim up --hosts 2 --gpus h200x8"
SIM_DOWN = "ms4fleet sim down"
PYINFRA = "pyinfra -y inventory/sim.py deploy.py"
ANSIBLE = "ansible-playbook -i inventory/sim.yml playbooks/site.yml"
REPLICAS = 4  # 8 x H200 serve Mistral Small 4 as 4 replicas of TP=2


@dataclass(frozen=True)
class Checkout:
    root: Path
    env: dict[str, str]

    def run(self, command: str) -> simfleet.Run:
        """``command`` as a user types it in the checkout's root (the dev venv's tools first on PATH)."""
        done = subprocess.run(
            shlex.split(command), cwd=self.root, env=self.env, capture_output=True, text=True, check=False
        )
        return simfleet.Run(done.returncode, 0.0, done.stdout + done.stderr)

    def fleet(self) -> simfleet.Fleet:
        target = simfleet_module.Fleet(root=self.root, name=FLEET)
        record = target.load()
        assert record is not None, "sim up left no fleet record"
        return simfleet.Fleet(target, record, self.root / "inventory" / "sim.py")


def _copy_checkout(dest: Path) -> Path:
    """The repository's files as a fresh clone of this working tree has them (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (item.decode() for item in listed)):
        source, target = ROOT / name, dest / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return dest


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checkout]:
    root = _copy_checkout(tmp_path_factory.mktemp("checkout"))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MS4FLEET_SIM_FLEET": FLEET,
        "ANSIBLE_FORCE_COLOR": "0",
    }
    here = Checkout(root, env)
    here.run(SIM_DOWN)
    try:
        yield here
    finally:
        here.run(SIM_DOWN)


def test_the_commands_are_the_documented_ones() -> None:
    quick_start = (ROOT / "docs" / "simulation.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in (SIM_UP, PYINFRA, ANSIBLE, SIM_DOWN):
        assert command in quick_start, command
    assert PYINFRA in readme


def test_pyinfra_quick_start_converges_both_hosts_then_changes_nothing(checkout: Checkout) -> None:
    up = checkout.run(SIM_UP)
    assert up.rc == 0, up.output[-3000:]
    first = checkout.run(PYINFRA)
    assert first.rc == 0, first.output[-3000:]
    fleet = checkout.fleet()
    assert len(fleet.hosts) == 2
    for name in fleet.hosts:
        simfleet.assert_serving(fleet, name, replicas=REPLICAS)
    again = checkout.run(PYINFRA)
    assert again.rc == 0, again.output[-3000:]
    assert again.changed_ops() == 0, again.output[-3000:]
    assert again.output.count("converged (nothing to do)") >= 1, again.output[-3000:]


def test_ansible_quick_start_converges_both_hosts_then_changes_nothing(checkout: Checkout) -> None:
    # A new fleet: the Ansible engine starts from bare hosts too.
    down = checkout.run(SIM_DOWN)
    assert down.rc == 0, down.output
    up = checkout.run(SIM_UP)
    assert up.rc == 0, up.output[-3000:]
    first = AnsibleRun(*_rc_output(checkout.run(ANSIBLE)))
    assert first.rc == 0, first.output[-3000:]
    fleet = checkout.fleet()
    for name in fleet.hosts:
        simfleet.assert_serving(fleet, name, replicas=REPLICAS)
    assert set(first.recap()) >= set(fleet.hosts), first.recap()
    again = AnsibleRun(*_rc_output(checkout.run(ANSIBLE)))
    assert again.rc == 0, again.output[-3000:]
    assert again.changed() == 0, again.recap()
    # No task failed quietly either (a failure under ignore_errors still counts in the recap).
    assert "...ignoring" not in first.output + again.output, again.output[-3000:]


def _rc_output(run: simfleet.Run) -> tuple[int, float, str]:
    return run.rc, run.seconds, run.output
