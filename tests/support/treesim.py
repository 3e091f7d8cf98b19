"""Peer staging on a sim fleet: a revision of real size in the fleet's mirror, throttled links, and the
relays' jobs for the fleet's hosts (shared by tests/weights/test_peers_sim.py and bench/weights_tree.py)."""

from __future__ import annotations

import json
from pathlib import Path

from simhosts import SimFleet

from ms4fleet.weights.peers import PeerJob, Source, mirror_source
from ms4fleet.weights.stage import HostTarget, StageJob
from ms4fleet_sim import dockercli, links, weights_mirror

REPO = "bench/tree"
REVISION = "7e" * 20
DEST = f"/srv/ms4fleet/models/bench--tree/{REVISION}"
PORT = 8790


def put_revision(sim: SimFleet, files: int, file_bytes: int) -> tuple[Source, str, int]:
    """The revision in the fleet's mirror; the source the hosts pull it from, its manifest text, its size."""
    tree = weights_mirror.build_large_tree(sim.fleet.mirror_dir, REPO, REVISION, files, file_bytes)
    text = (tree / ".ms4fleet" / "manifest.json").read_text()
    size = sum(entry["size"] for entry in json.loads(text)["files"])
    # The hosts reach the mirror by its name on the fleet network (the controller uses a loopback port).
    return mirror_source(f"http://{sim.fleet.mirror_container}:80", REPO, REVISION), text, size


def throttle_all(sim: SimFleet, rate: str) -> None:
    links.throttle(sim.fleet.mirror_container, rate)
    for host in sim.hosts.values():
        links.throttle(host.container, rate)


def jobs(sim: SimFleet, names: list[str] | None = None) -> list[PeerJob]:
    record = sim.record
    out = []
    for name in names or sorted(sim.hosts):
        host = next(h for h in record.hosts if h.name == name)
        target = HostTarget(
            name=name,
            hostname="127.0.0.1",
            port=host.ssh_port,
            user=record.user,
            key=record.key_file,
            ssh_options=("-o", f"UserKnownHostsFile={record.known_hosts}"),
        )
        out.append(PeerJob(StageJob(target, DEST, "root"), host.container, PORT))
    return out


def clear(sim: SimFleet, names: list[str] | None = None) -> None:
    for name in names or sorted(sim.hosts):
        dockercli.run(["exec", sim.hosts[name].container, "rm", "-rf", DEST, DEST + ".partial"])


def verified(sim: SimFleet, name: str) -> bool:
    """``weights_verify.py verify --full`` on the host, with the script the units run before every start."""
    script = Path(__file__).resolve().parents[2] / "src" / "ms4fleet" / "hostside" / "weights_verify.py"
    done = dockercli.run(
        ["exec", "-i", sim.hosts[name].container, "python3", "-", "verify", DEST, "--full"],
        input_bytes=script.read_bytes(),
        check=False,
    )
    return done.returncode == 0
