"""The core's switch script, run by bash against a unit directory of its own and a systemctl that logs: what a
shrink, a grow and a rollback leave installed and which units they stop, start and remove; the replicas'
ports; who stays out of the load balancer."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ms4fleet import paths
from ms4fleet.config import HostConfig
from ms4fleet.rollout.hoststate import Phase
from ms4fleet.rollout.release import release_for
from ms4fleet.rollout.switch import lb_out, release_ports, stop_script, switch_script
from ms4fleet.serving import plan_host

U0, U1 = "ms4fleet-vllm-0.service", "ms4fleet-vllm-1.service"


def run(tmp_path: Path, installed: dict[str, str], staged: dict[str, str], script: str) -> tuple[dict[str, str], str]:
    """Run ``script`` with the systemd directory at tmp_path/units; returns what is installed after and the
    systemctl calls."""
    units, source, bin_dir = tmp_path / "units", tmp_path / "staged", tmp_path / "bin"
    for directory in (units, source, bin_dir):
        directory.mkdir(exist_ok=True)
    for name, text in installed.items():
        (units / name).write_text(text)
    for name, text in staged.items():
        (source / name).write_text(text)
    log = tmp_path / "systemctl.log"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (bin_dir / "systemctl").chmod(0o755)
    text = script.replace(paths.SYSTEMD_DIR, str(units)).replace("/SOURCE", str(source))
    subprocess.run(["bash", "-c", text], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    after = {p.name: p.read_text() for p in sorted(units.iterdir())}
    return after, log.read_text() if log.exists() else ""


def test_a_shrink_stops_every_old_unit_and_removes_the_one_not_wanted(tmp_path: Path) -> None:
    after, calls = run(tmp_path, {U0: "old0", U1: "old1"}, {U0: "new0"}, switch_script([U0], "/SOURCE", start=True))
    assert after == {U0: "new0"}
    assert calls.splitlines() == [
        f"stop {U0} {U1}",
        f"disable {U1}",
        # The host proxy, active here, reloads once the old replicas freed their ports.
        "is-active --quiet nginx",
        "reload nginx",
        "daemon-reload",
        f"reset-failed {U0}",
        f"enable --quiet {U0}",
        f"start --no-block {U0}",
    ]


def test_a_rollback_removes_units_only_the_failed_release_added(tmp_path: Path) -> None:
    script = switch_script([U0], "/SOURCE", start=True, block=True)
    after, calls = run(tmp_path, {U0: "bad0", U1: "bad1"}, {U0: "good0"}, script)
    assert after == {U0: "good0"}
    assert f"disable {U1}" in calls and calls.splitlines()[-1] == f"start {U0}"


def test_units_the_driver_read_are_the_old_ones_and_a_grow_removes_nothing(tmp_path: Path) -> None:
    script = switch_script([U0, U1], "/SOURCE", old=[U0], start=False)
    after, calls = run(tmp_path, {U0: "old0"}, {U0: "new0", U1: "new1"}, script)
    assert after == {U0: "new0", U1: "new1"}
    assert calls.splitlines() == [f"stop {U0}", "is-active --quiet nginx", "reload nginx", "daemon-reload"]
    assert stop_script([U0, U1]) == f"systemctl disable --now --quiet {U0} {U1}"


def test_ports_come_from_each_replica_s_argv() -> None:
    config = HostConfig.from_host_data(
        "gpu-1", {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 2}, "ms4fleet_serving": {"tensor_parallel_size": 1}}
    )
    plan = plan_host(config)
    assert release_ports(release_for(config, plan)) == {r.unit_name: r.internal_port for r in plan.replicas}


def test_only_verified_or_rolled_back_hosts_rejoin() -> None:
    phases = {
        "a": Phase.VERIFIED,
        "b": Phase.ROLLING_BACK,
        "c": "rolled-back",
        "d": Phase.DRAINED,
        "e": Phase.FAILED,
        "f": Phase.UNREACHABLE,
        "g": Phase.STOPPED,
    }
    assert lb_out(phases, {"a", "c", "h"}) == {"d", "e", "f", "g", "h"}
    assert lb_out({}, set()) == set()
