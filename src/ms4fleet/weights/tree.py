"""The peer staging plan: who feeds whom, so the source sends a revision about once however many hosts want it.

Pure: host names in, a tree out. The source (the controller's staging copy, or the mirror) feeds at most
``seeds`` hosts; every other host is fed by a host that holds, or is receiving, the verified revision, and
no host feeds more than ``fanout`` others. Hosts that already hold the verified revision feed first (the
source then feeds nobody). Hosts are attached breadth first, so the depth grows with log_fanout(N).

+ ``Limits(fanout, seeds)``: validated in ``ms4fleet.config.WeightsConfig`` (``peer_fanout``, ``peer_seeds``).
+ ``plan_tree(needers, holders, limits)`` -> ``StagePlan`` (``parents``: host -> its feeder, ``SOURCE`` for seeds).
+ ``replan(plan, cut, verified, limits)``: hosts in ``cut`` (dead, or failed verification) never feed again; each
  subtree they fed is re-attached to a verified holder (or a host outside that subtree, or the source) with room.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# The feeder of a seed: not a host name (names are validated hostnames, never this).
SOURCE = "<source>"


@dataclass(frozen=True)
class Limits:
    fanout: int = 2
    seeds: int = 1

    def __post_init__(self) -> None:
        if self.fanout < 1 or self.seeds < 1:
            raise ValueError(f"fanout ({self.fanout}) and seeds ({self.seeds}) must be at least 1")

    def room(self, feeder: str) -> int:
        return self.seeds if feeder == SOURCE else self.fanout


@dataclass(frozen=True)
class StagePlan:
    """``parents[host]``: who feeds ``host`` (a holder, another receiving host, or ``SOURCE``).
    ``holders``: hosts that hold the verified revision and feed without receiving. ``cut``: hosts never used."""

    parents: dict[str, str]
    holders: tuple[str, ...] = ()
    cut: tuple[str, ...] = ()

    def children(self, feeder: str) -> list[str]:
        return [child for child, parent in self.parents.items() if parent == feeder]

    def depth(self, host: str) -> int:
        """Links between the source (or a holder) and ``host``: 1 for a seed."""
        steps = 0
        while host in self.parents:
            host = self.parents[host]
            steps += 1
        return steps

    @property
    def max_depth(self) -> int:
        return max((self.depth(host) for host in self.parents), default=0)

    def subtree(self, host: str) -> set[str]:
        """``host`` and every host fed, directly or not, through it."""
        found = {host}
        grew = True
        while grew:
            grew = False
            for child, parent in self.parents.items():
                if parent in found and child not in found:
                    found.add(child)
                    grew = True
        return found

    def source_links(self) -> int:
        return len(self.children(SOURCE))

    def order(self) -> list[str]:
        """Receiving hosts, feeders before the hosts they feed (the order transfers start in)."""
        return sorted(self.parents, key=lambda host: (self.depth(host), host))


def _distinct(names: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for name in names:
        if name == SOURCE:
            raise ValueError(f"{SOURCE!r} names the source, not a host")
        if name not in seen:
            seen.append(name)
    return seen


def plan_tree(needers: Sequence[str], holders: Sequence[str], limits: Limits) -> StagePlan:
    """A breadth-first tree: holders (else the source) feed the first hosts, each of which feeds the next."""
    have = _distinct(holders)
    want = [name for name in _distinct(needers) if name not in have]
    # Feeders in the order they take children; a holder is fed by nobody, so it heads the queue.
    feeders: list[str] = list(have) if have else [SOURCE]
    load = dict.fromkeys(feeders, 0)
    parents: dict[str, str] = {}
    at = 0
    for host in want:
        while load[feeders[at]] >= limits.room(feeders[at]):
            at += 1
        parents[host] = feeders[at]
        load[feeders[at]] += 1
        feeders.append(host)
        load[host] = 0
    return StagePlan(parents, tuple(have))


def replan(plan: StagePlan, cut: Iterable[str], verified: Iterable[str], limits: Limits) -> StagePlan:
    """Cut hosts out and re-attach what they fed. Edges from hosts still in the tree are kept (a child keeps its
    partial files and its feeder); an orphan goes to a verified holder with room, else the shallowest host outside its
    own subtree that reaches a holder or the source, else the source, else any host outside its subtree."""
    gone = set(plan.cut) | set(cut)
    done = set(verified) - gone
    holders = tuple(h for h in (*plan.holders, *sorted(done - set(plan.holders))) if h not in gone)
    parents = {child: parent for child, parent in plan.parents.items() if child not in gone and child not in done}

    def attached(host: str) -> bool:
        return host in parents or host in holders

    def load(feeder: str) -> int:
        return sum(1 for parent in parents.values() if parent == feeder)

    def rooted(host: str) -> bool:
        while host in parents:
            host = parents[host]
        return host == SOURCE or host in holders

    orphans = sorted((c for c, p in parents.items() if p != SOURCE and not attached(p)), key=plan.depth)
    for orphan in orphans:
        draft = StagePlan(parents, holders)
        mine = draft.subtree(orphan)
        outside = sorted((h for h in parents if h not in mine and load(h) < limits.fanout), key=draft.depth)
        candidates = [h for h in holders if load(h) < limits.fanout]
        candidates += [h for h in outside if rooted(h)]
        candidates += [SOURCE] if load(SOURCE) < limits.seeds else []
        candidates += [h for h in outside if not rooted(h)]
        # A cut host frees a slot in its nearest live ancestor (or the source), and every leaf has room.
        parents[orphan] = candidates[0]
    return StagePlan(parents, holders, tuple(sorted(gone)))
