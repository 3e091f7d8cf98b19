"""Benchmark: peer staging (``ms4fleet.weights.peers``) on a sim fleet whose links are throttled with tc.

    .venv/bin/python bench/weights_tree.py [--hosts 8] [--size-mib 1024] [--files 16] [--rate 200mbit]
                                           [--fanout 1] [--keep]

Brings up its own fleet (``wtree``), writes a revision of random bytes into the fleet's mirror, puts a token
bucket (``--rate``) on the egress of the mirror and of every host, then stages the revision to one host, and
to all of them, through the peer tree. Counted at the mirror: the bytes its qdisc sent (TCP/IP headers
included). Printed: both runs, and the two ratios the acceptance asks for (targets: mirror egress for all
hosts <= 1.1x the revision; time for all hosts <= 2.5x the time for one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

import treesim
from simhosts import SimFleet, bring_up

from ms4fleet.weights.peers import PeerJob, Source, stage_tree
from ms4fleet.weights.tree import Limits
from ms4fleet_sim import fleet as simfleet
from ms4fleet_sim import links

MIB = 1024**2


def run(sim: SimFleet, source: Source, text: str, peers: list[PeerJob], limits: Limits) -> tuple[float, int, int]:
    """Stage to ``peers`` from empty hosts: seconds, bytes the mirror sent, tree depth."""
    treesim.clear(sim)
    before = links.egress_bytes(sim.fleet.mirror_container)
    started = time.monotonic()
    report = stage_tree(source, text, peers, limits, timeout=3600)
    elapsed = time.monotonic() - started
    sent = links.egress_bytes(sim.fleet.mirror_container) - before
    failed = [line for line, o in zip(report.lines(), report.outcomes, strict=True) if o.status != "staged"]
    if failed:
        raise SystemExit("staging failed:\n" + "\n".join(failed))
    for peer in peers:
        if not treesim.verified(sim, peer.name):
            raise SystemExit(f"{peer.name}: the staged revision does not verify")
    return elapsed, sent, report.plan.max_depth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--rate", default="200mbit")
    parser.add_argument("--fanout", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="leave the fleet up")
    args = parser.parse_args()
    sim = bring_up(Path(tempfile.mkdtemp(prefix="weights-tree-")), name="wtree", specs=("h200x1",) * args.hosts)
    try:
        source, text, size = treesim.put_revision(sim, args.files, args.size_mib * MIB // args.files)
        treesim.throttle_all(sim, args.rate)
        limits = Limits(fanout=args.fanout, seeds=1)
        peers = treesim.jobs(sim)
        one = run(sim, source, text, peers[:1], limits)
        many = run(sim, source, text, peers, limits)
    finally:
        if not args.keep:
            simfleet.down(sim.fleet)
    print(f"revision: {size / MIB:.0f} MiB in {args.files} files; links: {args.rate}; fan-out {args.fanout}")
    print("| hosts | time | mirror sent | x revision | tree depth |")
    print("|---|---|---|---|---|")
    for count, (elapsed, sent, depth) in ((1, one), (len(peers), many)):
        print(f"| {count} | {elapsed:.1f} s | {sent / MIB:.0f} MiB | {sent / size:.2f}x | {depth} |")
    egress, timing = many[1] / size, many[0] / one[0]
    print(
        f"mirror egress for {len(peers)} hosts: {egress:.2f}x the revision (target <= 1.1): "
        f"{'ok' if egress <= 1.1 else 'MISSED'}"
    )
    print(f"time for {len(peers)} hosts: {timing:.2f}x one host (target <= 2.5): {'ok' if timing <= 2.5 else 'MISSED'}")
    return 0 if egress <= 1.1 and timing <= 2.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
