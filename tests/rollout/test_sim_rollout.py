"""Rollouts on the simulated fleet, with faults injected: a canary that dies on its first decode, a host
lost mid-wave, a rollout under client load through the nginx load balancer, and a repeated rollout.

The tests run in file order on one fleet (each starts from the state the previous left): A everywhere,
A again (no-op), B under load, a bad release C on the canary, D with a host lost mid-wave.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ms4fleet import paths
from ms4fleet.inventory import load_inventory
from ms4fleet.rollout import lb
from ms4fleet.rollout.hoststate import HostRun, Phase
from ms4fleet.rollout.journal import JOURNAL_NAME, Journal, fleet_dir, unfinished
from ms4fleet.rollout.release import RELEASE_FILE
from ms4fleet.rollout.waves import Policy, WaveSize
from ms4fleet.serving import plan_host
from ms4fleet_pyinfra.rollout.cli import register_rollout, register_status
from ms4fleet_pyinfra.rollout.driver import Rollout
from ms4fleet_pyinfra.rollout.lbctl import LoadBalancer, backends_for, load_lb_inventory
from ms4fleet_sim import dockercli
from tests.rollout.load import Load
from tests.rollout.world import REVISION_B, World

pytestmark = [pytest.mark.sim, pytest.mark.slow]

CRASH_FILE = "/etc/ms4fleet-test/crash.json"


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ms4fleet")
    sub = parser.add_subparsers(dest="command", required=True)
    register_rollout(sub)
    register_status(sub)
    args = parser.parse_args(list(argv))
    result: int = args.func(args)
    return result


def rollout(world: World, inventory: Path, report: Path, *options: str) -> tuple[int, dict[str, Any]]:
    code = cli(
        "rollout", str(inventory), "--lb-inventory", str(world.lb_inventory()), "--report-dir", str(report), *options
    )
    return code, json.loads((report / "rollout.json").read_text())


def host_state(world: World, *names: str) -> dict[str, dict[str, str]]:
    """Per host (all, or ``names``): the release record bytes, the unit files' sha256 and when each unit last
    became active."""
    out = {}
    for host in world.gpu:
        if names and host.name not in names:
            continue
        record = host.sudo(f"cat {RELEASE_FILE} 2>/dev/null || true").stdout
        units = host.sudo(
            f"cd {paths.SYSTEMD_DIR} && for u in {paths.UNIT_PREFIX}-*.service; do "
            'echo "$u $(sha256sum < $u | cut -c1-16) $(systemctl show -p ActiveEnterTimestampMonotonic --value $u) '
            '$(systemctl is-active $u)"; done'
        ).stdout
        out[host.name] = {"record": record, "units": units}
    return out


def current_release(world: World, name: str) -> dict[str, Any]:
    host = next(h for h in world.gpu if h.name == name)
    return dict(json.loads(host.sudo(f"cat {RELEASE_FILE}").stdout))


def lb_conf(world: World) -> str:
    return world.lb.sudo(f"cat {lb.CONF_PATH}").stdout


def test_first_rollout_then_the_same_release_again_changes_nothing(rollout_world: World, tmp_path: Path) -> None:
    inventory = rollout_world.inventory("release-a")
    code, report = rollout(rollout_world, inventory, tmp_path / "a")
    assert (code, report["outcome"]) == (0, "complete"), report["stopped"]
    ids = {h["host"]: h["after"] for h in report["hosts"]}
    assert len(set(ids.values())) == 1
    for host in rollout_world.gpu:
        record = current_release(rollout_world, host.name)
        assert record["current"]["id"] == ids[host.name] and record["previous"] is None
    assert "down;" not in lb_conf(rollout_world)
    with Load(rollout_world.lb_url, workers=1) as load:
        load.wait_for(10)
    assert load.result.failed == 0

    before = host_state(rollout_world)
    code, again = rollout(rollout_world, inventory, tmp_path / "again")
    assert (code, again["outcome"]) == (0, "no-op")
    assert again["plan"]["waves"] == []
    assert {h["phase"] for h in again["hosts"]} == {"unchanged"}
    # Not a byte of a record or a unit changed, and no replica was restarted.
    assert host_state(rollout_world) == before


def test_three_of_four_hosts_out_of_the_lb_refuses_before_anything_stops(
    rollout_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16: with 3 of 4 hosts drained, a rollout with default options once stopped the last serving
    host. It must be refused with one line, and nothing on any host or the load balancer may change."""
    inventory = rollout_world.inventory("release-refused", revision=REVISION_B)
    fleet = load_inventory(inventory)
    balancer = LoadBalancer(
        load_lb_inventory(str(rollout_world.lb_inventory())),
        backends_for(list(fleet), {spec.name: plan_host(spec.config) for spec in fleet}),
    )
    assert not balancer.apply({"rollout-1", "rollout-2", "rollout-3"}).failed
    try:
        before, conf = host_state(rollout_world), lb_conf(rollout_world)
        capsys.readouterr()
        with Load(rollout_world.lb_url, workers=1) as load:
            load.wait_for(5)
            code = cli(
                "rollout", str(inventory), "--lb-inventory", str(rollout_world.lb_inventory()),
                "--report-dir", str(tmp_path / "refused"),
            )  # fmt: skip
            load.wait_for(load.result.ok + 5)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, err
        assert len(err) == 1 and err[0].startswith("ms4fleet: error: refused, nothing was changed: "), err
        assert "3 of 4 hosts (rollout-1, rollout-2, rollout-3) are already out of the load balancer" in err[0]
        assert host_state(rollout_world) == before and lb_conf(rollout_world) == conf
        assert not (tmp_path / "refused" / "rollout.json").exists()
        assert load.result.failed == 0, load.result.reasons
    finally:
        assert not balancer.apply(set()).failed
    assert "down;" not in lb_conf(rollout_world)


def test_rollout_under_client_load_through_the_lb_fails_no_request(rollout_world: World, tmp_path: Path) -> None:
    inventory = rollout_world.inventory("release-b", revision=REVISION_B)
    before = {h.name: current_release(rollout_world, h.name)["current"]["id"] for h in rollout_world.gpu}
    with Load(rollout_world.lb_url, workers=2) as load:
        load.wait_for(20)
        code, report = rollout(rollout_world, inventory, tmp_path / "b", "--canary", "1", "--wave", "2")
        load.wait_for(load.result.ok + 20)
    assert (code, report["outcome"]) == (0, "complete"), report["stopped"]
    assert load.result.failed == 0, load.result.reasons
    assert load.result.ok > 100
    assert [w["hosts"] for w in report["plan"]["waves"]] == [["rollout-1"], ["rollout-2", "rollout-3"], ["rollout-4"]]
    for host in rollout_world.gpu:
        record = current_release(rollout_world, host.name)
        assert record["previous"]["id"] == before[host.name]
        assert record["current"]["weights_revision"] == REVISION_B
    # Every host left the LB once and came back: capacity dipped by one host's replicas at most.
    points = report["capacity"]["points"]
    total = report["capacity"]["total_replicas"]
    assert min(n for _, n in points) == total - 2 and points[-1][1] == total
    page = (tmp_path / "b" / "rollout.html").read_text()
    assert "<svg" in page and "rollout-4" in page


def test_controller_killed_mid_wave_then_resume_completes_with_one_report(
    rollout_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL the controller once a host of the second wave is stopped: a concurrent rollout meanwhile is
    refused naming the holder; --resume switches the host left drained first, completes, fails no request,
    and its report covers both runs."""
    inventory = rollout_world.inventory("release-e", revision=REVISION_B, max_num_seqs=48)
    journal = Journal(fleet_dir([h.name for h in rollout_world.gpu]) / JOURNAL_NAME)
    options = ["--lb-inventory", str(rollout_world.lb_inventory()), "--canary", "1", "--wave", "2"]
    command = [str(Path(sys.executable).with_name("ms4fleet")), "rollout", str(inventory), *options]
    with Load(rollout_world.lb_url, workers=2) as load:
        load.wait_for(20)
        controller = subprocess.Popen(
            [*command, "--report-dir", str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 600
            while not any(e["event"] == "plan" for e in journal.read()):
                assert controller.poll() is None and time.monotonic() < deadline, controller.stderr
                time.sleep(0.2)
            capsys.readouterr()
            assert cli("rollout", str(inventory), *options, "--report-dir", str(tmp_path / "second")) == 2
            refused = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ms4fleet")]
            assert len(refused) == 1 and f"pid {controller.pid}, since " in refused[0], refused
            assert "another rollout of this fleet is running (user " in refused[0]
            while not any(e.get("host") == "rollout-2" and e.get("phase") == "stopped" for e in journal.read()):
                assert controller.poll() is None and time.monotonic() < deadline, controller.stderr
                time.sleep(0.1)
        finally:
            controller.kill()
            controller.wait()
        # The killed controller's report is as of its last step written: rollout-2 drained (or already stopped).
        killed = json.loads((tmp_path / "killed" / "rollout.json").read_text())
        assert {h["host"]: h["phase"] for h in killed["hosts"]}["rollout-2"] in {"drained", "stopped"}
        assert killed["hosts"][0]["phase"] == "rejoined" and killed["stopped"] == ""
        assert "# rollout-2" in next(line for line in lb_conf(rollout_world).splitlines() if " down;" in line)
        code, report = rollout(rollout_world, inventory, tmp_path / "resumed", *options[2:], "--resume")
        load.wait_for(load.result.ok + 20)
    assert (code, report["outcome"]) == (0, "complete"), report["stopped"]
    assert load.result.failed == 0, load.result.reasons
    # One report covers both runs: the killed one from the journal, then this one.
    (killed,) = report["earlier_runs"]
    assert killed["ended"] == "controller died (no end in the journal)"
    assert [p["phase"] for p in killed["hosts"]["rollout-1"]][-1] == "rejoined"
    assert [p["phase"] for p in killed["hosts"]["rollout-2"]][-1] == "stopped"
    phases = {h["host"]: h["phase"] for h in report["hosts"]}
    assert phases == {
        "rollout-1": "unchanged",
        "rollout-2": "rejoined",
        "rollout-3": "rejoined",
        "rollout-4": "rejoined",
    }
    # The host left drained went first (it cost no capacity), and nothing rejoined unverified.
    assert report["plan"]["waves"][0]["hosts"] == ["rollout-2"]
    target = report["hosts"][1]["target"]
    for host in rollout_world.gpu:
        assert current_release(rollout_world, host.name)["current"]["id"] == target
    assert "down;" not in lb_conf(rollout_world)
    assert journal.read()[-1]["event"] == "end" and not unfinished(journal.read())


def test_canary_failing_verification_is_rolled_back_and_stops_the_rollout(rollout_world: World, tmp_path: Path) -> None:
    for host in rollout_world.gpu:
        host.sudo(f"mkdir -p /etc/ms4fleet-test && echo '{{\"crash_on_first_decode\": true}}' > {CRASH_FILE}")
    # Release C differs from B only by pointing the stand-in at a fault file: it starts healthy, answers
    # /health, and its engine dies on the first decode.
    inventory = rollout_world.inventory("release-c", revision=REVISION_B, env={"MS4FLEET_SIM_FAULTS_FILE": CRASH_FILE})
    before = host_state(rollout_world)
    record_b = current_release(rollout_world, "rollout-1")
    with Load(rollout_world.lb_url, workers=2) as load:
        load.wait_for(20)
        code, report = rollout(rollout_world, inventory, tmp_path / "c")
        load.wait_for(load.result.ok + 20)
    assert code == 1 and report["exit_code"] == 1 and report["outcome"] == "stopped"
    canary = report["hosts"][0]
    assert canary["host"] == "rollout-1" and canary["phase"] == "rolled-back"
    assert canary["after"] == canary["before"] == record_b["current"]["id"]
    assert [c["id"] for c in report["causes"]] == ["engine-dead"]
    assert "rollout-1 ended rolled-back: verify: replica 0" in report["stopped"]
    assert any(not r["ok"] for r in canary["verification"])
    # The canary serves its previous release again, its record unchanged; no other host was touched.
    assert current_release(rollout_world, "rollout-1") == record_b
    after = host_state(rollout_world)
    for name in ("rollout-2", "rollout-3", "rollout-4"):
        assert after[name] == before[name]
        assert report["hosts"][int(name[-1]) - 1]["phase"] == "pending"
    assert "down;" not in lb_conf(rollout_world)
    # The fleet kept serving: no client request failed, before, during or after.
    assert load.result.failed == 0, load.result.reasons
    assert "engine-dead" in (tmp_path / "c" / "rollout.html").read_text()


def test_host_unreachable_mid_wave_stops_the_rollout_and_leaves_the_rest_consistent(
    rollout_world: World, tmp_path: Path
) -> None:
    inventory = rollout_world.inventory("release-d", revision=REVISION_B, max_num_seqs=32)
    lost = next(h for h in rollout_world.gpu if h.name == "rollout-3")
    before = host_state(rollout_world)

    def stop_container(run: HostRun, phase: Phase) -> None:
        if run.name == lost.name and phase is Phase.DRAINED:
            dockercli.run(["stop", "-t", "1", lost.container])

    fleet = load_inventory(inventory)
    policy = Policy(canary=1, wave=WaveSize.parse("2"), max_unavailable=1)
    driver = Rollout(fleet, policy, load_lb_inventory(str(rollout_world.lb_inventory())), listeners=[stop_container])
    try:
        with Load(rollout_world.lb_url, workers=2) as load:
            load.wait_for(20)
            report = driver.run()
            load.wait_for(load.result.ok + 20)
        phases = {run.name: run.phase for run in report.runs}
        assert phases == {
            "rollout-1": Phase.REJOINED,
            "rollout-2": Phase.REJOINED,
            "rollout-3": Phase.UNREACHABLE,
            "rollout-4": Phase.PENDING,
        }
        assert report.exit_code == 1 and "rollout-3 ended unreachable" in report.stopped
        report.write(tmp_path / "d")
        target = report.run("rollout-1").target
        assert current_release(rollout_world, "rollout-1")["current"]["id"] == target
        assert current_release(rollout_world, "rollout-2")["current"]["id"] == target
        # The host not reached yet keeps its release and its running replicas, untouched.
        assert host_state(rollout_world, "rollout-4")["rollout-4"] == before["rollout-4"]
        # The lost host stays out of the load balancer; the others are in.
        conf = lb_conf(rollout_world)
        down = [line for line in conf.splitlines() if " down;" in line]
        assert down and all(line.endswith("# rollout-3") for line in down)
        assert load.result.failed == 0, load.result.reasons
    finally:
        dockercli.run(["start", lost.container])
