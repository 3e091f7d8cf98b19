"""Which replicas leave service now because a GPU under them went bad (a runtime Xid, an uncorrectable
ECC error, ...): decided here, applied by the engines (``ms4fleet health INVENTORY --drain``).

+ ``leaving(report, plan)``: the host's replicas whose GPU group holds a GPU the core excludes now.
+ ``plan_drain(leaving, backends, down, active)``: per replica, drain it (mark its load balancer backend
  down, wait for its requests, stop its unit), leave it (already out of service), or refuse (it is the last
  serving backend of the fleet: a sick replica serving beats no replica).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ms4fleet.health import HealthReport, exclusions
from ms4fleet.rollout.lb import Backend
from ms4fleet.serving import ServingPlan


@dataclass(frozen=True)
class Leaving:
    """A replica on a GPU excluded now, and why (the exclusions' reasons)."""

    host: str
    replica: int
    gpus: tuple[int, ...]
    port: int
    unit: str
    reason: str

    @property
    def label(self) -> str:
        return f"{self.host} replica {self.replica} (GPUs {','.join(map(str, self.gpus))}, port {self.port})"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "replica": self.replica,
            "gpus": list(self.gpus),
            "port": self.port,
            "unit": self.unit,
            "reason": self.reason,
        }


def leaving(report: HealthReport, plan: ServingPlan) -> tuple[Leaving, ...]:
    """The replicas of ``plan`` (the host's plan as deployed, before this reading) that use a GPU the
    reading ``report`` excludes."""
    now = {e.gpu: e.reason for e in exclusions(report, plan.gpu_count)}
    out = []
    for replica in plan.replicas:
        bad = [f"GPU {g} {now[g]}" for g in replica.gpus if g in now]
        if bad:
            out.append(Leaving(plan.host, replica.index, replica.gpus, replica.port, replica.unit_name, "; ".join(bad)))
    return tuple(out)


@dataclass(frozen=True)
class DrainPlan:
    """``drain``: replicas to take out now, each with its backend; ``done``: out already (backend down and
    unit stopped); ``refused``: one line each, the replica keeps serving."""

    drain: tuple[tuple[Leaving, Backend], ...] = ()
    done: tuple[Leaving, ...] = ()
    refused: tuple[tuple[Leaving, str], ...] = ()
    # Every backend the load balancer must mark down once this plan is applied (the ones down already too).
    down: frozenset[Backend] = field(default_factory=frozenset)


def plan_drain(
    leave: Iterable[Leaving],
    backends: Sequence[Backend],
    down: Collection[Backend],
    active: Mapping[tuple[str, int], bool],
) -> DrainPlan:
    """``backends``: every replica behind the load balancer; ``down``: those it marks down now; ``active``:
    (host, port) -> whether the replica's unit runs. A replica serves when its backend is up and its unit
    runs; the fleet's last serving backend is never taken out."""
    by_key = {(b.host, b.port): b for b in backends}
    serving = {key for key, b in by_key.items() if b not in down and active.get(key, False)}
    drain: list[tuple[Leaving, Backend]] = []
    done: list[Leaving] = []
    refused: list[tuple[Leaving, str]] = []
    new_down = set(down)
    for item in leave:
        key = (item.host, item.port)
        backend = by_key.get(key)
        if backend is None:
            raise ValueError(f"{item.label}: not a backend of the load balancer (is --lb-inventory this fleet's?)")
        if backend in down and not active.get(key, False):
            done.append(item)
            continue
        if key in serving and not serving - {key}:
            refused.append(
                (
                    item,
                    f"refused: {item.label} is the last serving backend of the fleet; it keeps serving on "
                    f"{item.reason}: bring another replica into service, then run the drain again",
                )
            )
            continue
        serving.discard(key)
        new_down.add(backend)
        drain.append((item, backend))
    return DrainPlan(tuple(drain), tuple(done), tuple(refused), frozenset(new_down))
