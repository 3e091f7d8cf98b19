"""Peer staging on a throttled sim fleet: a peer killed mid-transfer, a peer holding a corrupted file.

Brings up its own three-host fleet (``wpeers``). The mirror and every host send at most ``RATE`` (tc), so a
transfer lasts long enough to be interrupted where the test wants it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

import treesim
from simhosts import SimFleet

from ms4fleet.weights.peers import TreeReport, stage_tree
from ms4fleet.weights.tree import SOURCE, Limits

pytestmark = pytest.mark.sim

RATE = "100mbit"
FILES = 12
FILE_BYTES = 8 * 1024**2
CHAIN = Limits(fanout=1, seeds=1)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    from simhosts import bring_up

    from ms4fleet_sim import dockercli
    from ms4fleet_sim import fleet as simfleet

    if not dockercli.daemon_ok():
        pytest.fail("the sim needs a running dockerd: run scripts/ensure-docker.sh first")
    fleet = bring_up(tmp_path_factory.mktemp("peers-sim"), name="wpeers", specs=("h200x1",) * 3)
    try:
        treesim.throttle_all(fleet, RATE)
        yield fleet
    finally:
        for host in fleet.hosts.values():
            host.close()
        simfleet.down(fleet.fleet)


def partial_bytes(sim: SimFleet, name: str) -> int:
    from ms4fleet_sim import dockercli

    done = dockercli.run(
        ["exec", sim.hosts[name].container, "du", "-sb", treesim.DEST + ".partial"],
        check=False,
    )
    return int(done.stdout.split()[0]) if done.returncode == 0 else 0


def test_a_holder_with_a_corrupted_file_is_caught_refetched_and_never_feeds_it(sim: SimFleet) -> None:
    from ms4fleet_sim import dockercli

    source, text, _size = treesim.put_revision(sim, FILES, FILE_BYTES)
    treesim.clear(sim)
    names = sorted(sim.hosts)
    first = stage_tree(source, text, treesim.jobs(sim, names[:1]), CHAIN, timeout=300)
    assert first.outcomes[0].status == "staged", first.lines()
    # One byte of one shard changes on the first host (a write through the filesystem, as root).
    shard = f"{treesim.DEST}/consolidated-00002-of-{FILES:05d}.safetensors"
    flip = f"import os; fd = os.open({shard!r}, os.O_WRONLY); os.pwrite(fd, b'\\x00\\x01', 4096); os.close(fd)"
    dockercli.run(["exec", sim.hosts[names[0]].container, "python3", "-c", flip])
    assert not treesim.verified(sim, names[0])

    report = stage_tree(source, text, treesim.jobs(sim, names), CHAIN, timeout=300)
    assert [o.status for o in report.outcomes] == ["staged"] * 3, report.lines()
    notes = report.outcomes[0].notes
    assert notes == ["held the revision but failed verification: re-fetched its bad files"], report.lines()
    # It was no holder: the source fed the chain, and the corrupted host received only the bad shard again.
    assert report.plan.holders == () and report.plan.parents[names[0]] == SOURCE
    assert report.outcomes[0].bytes_received == FILE_BYTES
    for name in names:
        assert treesim.verified(sim, name), name


def test_a_peer_killed_mid_transfer_is_cut_out_and_the_fleet_finishes(sim: SimFleet) -> None:
    from ms4fleet_sim import dockercli

    source, text, size = treesim.put_revision(sim, FILES, FILE_BYTES)
    names = sorted(sim.hosts)
    treesim.clear(sim)
    result: list[TreeReport] = []
    # A chain: the mirror feeds the first host, which feeds the second, which feeds the third.
    worker = threading.Thread(
        target=lambda: result.append(stage_tree(source, text, treesim.jobs(sim, names), CHAIN, timeout=600))
    )
    worker.start()
    victim = names[1]
    deadline = time.monotonic() + 120
    while partial_bytes(sim, victim) < size // 3:
        assert time.monotonic() < deadline and worker.is_alive(), "the middle host never got a third of it"
        time.sleep(0.5)
    assert partial_bytes(sim, names[2]) > 0, "the last host is not fed by the middle one"
    dockercli.run(["kill", sim.hosts[victim].container])
    try:
        worker.join(timeout=300)
        assert not worker.is_alive()
        report = result[0]
        by_name = {o.host: o for o in report.outcomes}
        assert by_name[names[0]].status == by_name[names[2]].status == "staged", report.lines()
        assert by_name[victim].status == "failed"
        assert "dropped out" in report.cut[victim]
        assert any(victim in line and "failed" in line for line in report.lines())
        # The last host went on from its partial files, now fed by the first.
        assert by_name[names[2]].feeders == [victim, names[0]]
        assert by_name[names[2]].bytes_received < size + FILE_BYTES
        for name in (names[0], names[2]):
            assert treesim.verified(sim, name), name
    finally:
        dockercli.run(["start", sim.hosts[victim].container])
