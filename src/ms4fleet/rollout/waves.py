"""Wave planning: which hosts change together, in inventory order.

+ ``plan_waves(fleet, changing, canary=1, wave=WaveSize.parse("25%"), max_unavailable=1)``: the canary
  wave (the first ``canary`` hosts that change), then waves of ``wave`` hosts (a count, or a percentage of
  the fleet rounded up); inside a wave at most ``max_unavailable`` hosts are out of the load balancer at
  once (batches). Hosts already at the wanted release are left out: a second rollout plans zero waves.
  Hosts that serve nothing now (``unavailable``) change first: switching them costs no capacity.
+ ``check_capacity(fleet, unavailable, plan)``: refuse (``CapacityError``, one line) a plan that would leave
  fewer than ``hosts - max_unavailable`` hosts serving at any batch, or drain the last serving host, counting
  the hosts already out of the load balancer or failing verification; before anything stops.

Bad settings raise ``PolicyError`` naming the option and what to use, before any host is touched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

_SIZE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<percent>%?)$")


class PolicyError(ValueError):
    """A rollout option that cannot be honoured; the message names the option."""


class CapacityError(PolicyError):
    """The fleet's real state (hosts already out of service) leaves no room for the policy."""


@dataclass(frozen=True)
class WaveSize:
    """``--wave``: a host count (``2``) or a share of the fleet (``25%``)."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> WaveSize:
        match = _SIZE.match(text.strip())
        if match is None:
            raise PolicyError(f"--wave {text!r}: expected a host count (2) or a share of the fleet (25%)")
        number = float(match.group("number"))
        if match.group("percent"):
            if not 0 < number <= 100:
                raise PolicyError(f"--wave {text!r}: a share must be above 0% and at most 100%")
            return cls(percent=number)
        if number != int(number) or number < 1:
            raise PolicyError(f"--wave {text!r}: a host count must be a whole number of at least 1")
        return cls(count=int(number))

    def hosts(self, fleet_size: int) -> int:
        """Hosts per wave for a fleet of ``fleet_size`` (a share is rounded up: never a wave of 0)."""
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return max(1, math.ceil(fleet_size * self.percent / 100))

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


@dataclass(frozen=True)
class Wave:
    index: int
    kind: Literal["canary", "wave"]
    batches: tuple[tuple[str, ...], ...]

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(h for batch in self.batches for h in batch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "hosts": list(self.hosts),
            "batches": [list(b) for b in self.batches],
        }


@dataclass(frozen=True)
class Policy:
    canary: int = 1
    wave: WaveSize = WaveSize(percent=25.0)
    max_unavailable: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"canary": self.canary, "wave": str(self.wave), "max_unavailable": self.max_unavailable}


@dataclass(frozen=True)
class RolloutPlan:
    policy: Policy
    waves: tuple[Wave, ...]
    unchanged: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(h for wave in self.waves for h in wave.hosts)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutPlan:
        """A plan read back from ``to_dict()`` (the journal's ``plan`` event, a written report)."""
        policy = data["policy"]
        return cls(
            Policy(int(policy["canary"]), WaveSize.parse(str(policy["wave"])), int(policy["max_unavailable"])),
            tuple(
                Wave(int(w["index"]), w["kind"], tuple(tuple(batch) for batch in w["batches"])) for w in data["waves"]
            ),
            tuple(data.get("unchanged", ())),
            tuple(data.get("warnings", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_dict(),
            "waves": [w.to_dict() for w in self.waves],
            "unchanged": list(self.unchanged),
            "warnings": list(self.warnings),
        }


def check_policy(policy: Policy, fleet_size: int) -> list[str]:
    """Raise ``PolicyError`` for settings no fleet of this size can honour; return warnings."""
    if fleet_size < 1:
        raise PolicyError("the inventory has no hosts to roll out to")
    if policy.canary < 0:
        raise PolicyError(f"--canary {policy.canary}: must be 0 (no canary) or more")
    if policy.canary > fleet_size:
        raise PolicyError(
            f"--canary {policy.canary}: more than the fleet's {fleet_size} host(s); use at most {fleet_size}"
        )
    if policy.max_unavailable < 1:
        raise PolicyError(f"--max-unavailable {policy.max_unavailable}: at least 1 host must be allowed out of service")
    if fleet_size > 1 and policy.max_unavailable >= fleet_size:
        raise PolicyError(
            f"--max-unavailable {policy.max_unavailable}: would take all {fleet_size} hosts out of the load "
            f"balancer at once; use at most {fleet_size - 1}"
        )
    if fleet_size == 1:
        return ["the fleet has one host: it stops serving while it switches releases"]
    return []


def _batches(hosts: Sequence[str], size: int) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(hosts[i : i + size]) for i in range(0, len(hosts), size))


def plan_waves(
    fleet: Sequence[str], changing: Collection[str], policy: Policy, unavailable: Collection[str] = ()
) -> RolloutPlan:
    """Waves over the hosts of ``fleet`` (inventory order) that are in ``changing``; those in ``unavailable``
    (serving nothing now) first, since taking them out of service costs nothing."""
    if len(set(fleet)) != len(fleet):
        raise PolicyError("the inventory lists a host twice: list each host once")
    unknown = set(changing) - set(fleet)
    if unknown:
        raise PolicyError(f"hosts {sorted(unknown)} are not in the inventory")
    warnings = check_policy(policy, len(fleet))
    todo = [h for h in fleet if h in changing and h in unavailable] + [
        h for h in fleet if h in changing and h not in unavailable
    ]
    unchanged = tuple(h for h in fleet if h not in changing)
    waves: list[Wave] = []
    step = policy.max_unavailable
    if policy.canary and todo:
        waves.append(Wave(0, "canary", _batches(todo[: policy.canary], step)))
        todo = todo[policy.canary :]
    size = policy.wave.hosts(len(fleet))
    for start in range(0, len(todo), size):
        waves.append(Wave(len(waves), "wave", _batches(todo[start : start + size], step)))
    return RolloutPlan(policy, tuple(waves), unchanged, tuple(warnings))


def serving_floor(fleet_size: int, policy: Policy) -> int:
    """Hosts that must serve at every moment of a rollout: ``hosts - max_unavailable``, and never 0 once
    something serves (the last serving replica is never drained), except in a one-host fleet, which
    ``check_policy`` allows with its warning that it stops serving while it switches."""
    return 0 if fleet_size == 1 else max(fleet_size - policy.max_unavailable, 1)


def check_capacity(fleet: Sequence[str], unavailable: Collection[str], plan: RolloutPlan) -> None:
    """Raise ``CapacityError`` (one line) when ``plan`` would take the fleet below ``serving_floor`` at any
    batch, counting the hosts of ``unavailable`` (out of the load balancer, failing verification) as down
    and assuming every switched host rejoins. A fleet where nothing serves (a first install) has nothing
    to keep and may go wide."""
    down = [h for h in fleet if h in unavailable]
    serving = {h for h in fleet if h not in unavailable}
    if not serving:
        return
    floor = serving_floor(len(fleet), plan.policy)
    k = plan.policy.max_unavailable
    shown = ", ".join(down[:4]) + (f" and {len(down) - 4} more" if len(down) > 4 else "")
    if len(serving) < floor:
        raise CapacityError(
            f"--max-unavailable {k}: {len(down)} of {len(fleet)} hosts ({shown}) are already out of the load "
            f"balancer or fail verification, so {len(serving)} serve(s) where {floor} must keep serving: bring "
            f"them back first, or allow --max-unavailable {len(down)}"
        )
    for wave in plan.waves:
        for batch in wave.batches:
            left = serving - set(batch)
            if len(left) < floor:
                raise CapacityError(
                    f"--max-unavailable {k}: switching {', '.join(batch)} would leave {len(left)} of "
                    f"{len(fleet)} hosts serving, below {floor}: lower --max-unavailable or bring hosts back first"
                )
            serving |= set(batch)
