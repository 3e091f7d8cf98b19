"""A controller without rsync (or without ssh) on a real sim host: ``pyinfra -y INVENTORY deploy.py`` and
``ansible-playbook -i INVENTORY playbooks/site.yml`` each stop with the one line naming the program and how
to install it, before any host is touched (the host's packages, apt lists and every directory the deploy
writes are byte-for-byte as before), and without a traceback; Ansible's check honours --limit."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ansible import simrun
from tests.pyinfra import simfleet

pytestmark = [pytest.mark.sim]

FLEET = "doctor"
HOST = f"{FLEET}-1"
# What the first operations of either engine change: apt's lists and packages, the apt sources, keyrings and
# pin, the nouveau blacklist, units, Docker's config, the weights and ms4fleet's own state.
SNAPSHOT = (
    "dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n'; "
    + "; ".join(
        f"ls -la --time-style=full-iso {d} 2>&1"
        for d in (
            "/var/lib/apt/lists",
            "/etc/apt/sources.list.d",
            "/etc/apt/keyrings",
            "/etc/apt/preferences.d",
            "/etc/modprobe.d",
            "/etc/systemd/system",
            "/etc/docker",
            "/srv",
            "/var/lib/ms4fleet",
        )
    )
    + "; true"
)
LINES = {
    "rsync": "ms4fleet: controller: rsync not found on PATH (needed for weights staging): "
    "install it with `apt-get install rsync`",
    "ssh": "ms4fleet: controller: ssh not found on PATH (needed for {what}): "
    "install it with `apt-get install openssh-client`",
}
SSH_USE = {
    "pyinfra": "weights staging over SSH",
    "ansible": "weights staging over SSH and the Ansible engine's SSH connections",
}


@pytest.fixture(scope="module")
def fleet() -> Iterator[simfleet.Fleet]:
    fleet = simfleet.ensure_fleet(FLEET, 1, "h200x2")
    try:
        yield fleet
    finally:
        fleet.down()


def _path_without(tmp_path: Path, missing: str) -> str:
    """A PATH with the controller's programs but ``missing``, then the venv (pyinfra, ansible-playbook)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in {"rsync", "ssh"} - {missing}:
        (bin_dir / name).symlink_to(str(shutil.which(name)))
    return f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}"


@pytest.mark.parametrize("missing", ["rsync", "ssh"])
def test_pyinfra_stops_before_any_host_is_touched(
    fleet: simfleet.Fleet, missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = fleet.sh(HOST, SNAPSHOT)
    with monkeypatch.context() as env:  # the pyinfra run's PATH only (the snapshots need docker)
        env.setenv("PATH", _path_without(tmp_path, missing))
        # Never reached: the run stops before the weights source or the image archive is looked at.
        run = simfleet.pyinfra(fleet, archive=tmp_path / "none.tar")
    line = LINES[missing].format(what=SSH_USE["pyinfra"])
    assert run.rc != 0
    # pyinfra frames it ("--> pyinfra error in FILE line N: LINE"); the line is said once, nothing else is.
    mentions = [row for row in run.output.splitlines() if "ms4fleet" in row]
    assert len(mentions) == 1 and mentions[0].endswith(line), run.output
    assert "Traceback" not in run.output
    assert "Starting operation" not in run.output and "Loaded fact" not in run.output
    assert fleet.sh(HOST, SNAPSHOT) == before


@pytest.mark.parametrize(
    ("missing", "limit"), [("rsync", ()), ("ssh", ()), ("rsync", ("--limit", HOST))], ids=["rsync", "ssh", "limit"]
)
def test_ansible_site_stops_before_any_host_is_touched(
    fleet: simfleet.Fleet, missing: str, limit: tuple[str, ...], tmp_path: Path
) -> None:
    before = fleet.sh(HOST, SNAPSHOT)
    run = simrun.playbook(
        fleet.inventory.with_suffix(".yml"), "site.yml", *limit, env={"PATH": _path_without(tmp_path, missing)}
    )
    line = LINES[missing].format(what=SSH_USE["ansible"])
    assert run.rc != 0
    # Ansible says a failed task's message twice ("[ERROR]: Task failed: MSG" and "fatal: [HOST]: FAILED! => ...").
    mentions = [row for row in run.output.splitlines() if "ms4fleet: controller" in row]
    assert len(mentions) == 2 and all(line in row for row in mentions), run.output
    assert mentions[1].startswith(f"fatal: [{HOST}]: FAILED! => "), run.output
    assert "Traceback" not in run.output
    # The preflight's one task (run on the controller) is all that ran: no later play, no fact gathered.
    plays = [row for row in run.output.splitlines() if row.startswith(("PLAY [", "TASK ["))]
    assert [row.split(" *")[0] for row in plays] == [
        "PLAY [Controller preflight]",
        "TASK [Check the programs, versions and Python packages this run needs on the controller]",
    ], run.output
    assert run.recap() == {HOST: {"ok": 0, "changed": 0, "unreachable": 0, "failed": 1}}
    assert fleet.sh(HOST, SNAPSHOT) == before
