"""Take replicas whose GPU went bad out of service, over the pyinfra API: the core decides which
(``ms4fleet.drain``), this applies it with the rollout's machinery.

For each replica to drain: its backend marked ``down`` in nginx (one reload for all, old workers finish
their requests), its in-flight requests waited to 0 (bounded), its unit stopped and left stopped (the next
deploy plans around the GPU). A replica out already is left alone, so a second pass changes nothing. A pass
with something to drain holds the rollout's fleet lock (one writer of nginx's config and the units).

+ ``Drainer(fleet, lb_hosts)``: built before any host is contacted (bad input fails here);
  ``run(reports)`` applies one pass for the health readings of the fleet and returns a ``DrainOutcome``.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api.command import FunctionCommand
from pyinfra.api.operation import operation

from ms4fleet.config import internal_port
from ms4fleet.drain import DrainPlan, Leaving, leaving, plan_drain
from ms4fleet.health import HealthReport
from ms4fleet.inventory import Fleet, HostSpec
from ms4fleet.rollout import lb
from ms4fleet.rollout.journal import FleetLock, LockedError, fleet_dir
from ms4fleet.rollout.release import ReleaseError
from ms4fleet.serving import local_address, plan_host
from ms4fleet_pyinfra.rollout import hostops
from ms4fleet_pyinfra.rollout.lbctl import LbHost, LoadBalancer, backends_for
from ms4fleet_pyinfra.rollout.session import run_state, shell, sudo_for

# A unit in one of these states still holds (or is about to hold) the GPU and its port.
RUNNING_STATES = frozenset({"active", "activating", "reloading", "deactivating"})


@dataclass
class Drained:
    item: Leaving
    backend: str
    wait: str = ""
    stopped: bool = False
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**self.item.to_json(), "backend": self.backend, "wait": self.wait, "stopped": self.stopped}

    @property
    def line(self) -> str:
        if self.error:
            return f"{self.item.label}: drain failed: {self.error}"
        return (
            f"drained {self.item.label}: backend {self.backend} down in nginx, {self.wait}, "
            f"{self.item.unit} stopped; reason: {self.item.reason}"
        )


@dataclass
class DrainOutcome:
    drained: list[Drained] = field(default_factory=list)
    already_out: list[Leaving] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.refused or self.errors or any(d.error for d in self.drained))

    def lines(self) -> list[str]:
        return [d.line for d in self.drained] + self.refused + self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "drained": [d.to_json() for d in self.drained if not d.error],
            "already_out": [item.to_json() for item in self.already_out],
            "refused": self.refused,
            "errors": self.errors + [d.line for d in self.drained if d.error],
        }


def _units(state: Any, host: Any, states: dict[str, dict[str, str]], sudo: bool) -> bool:
    ok, out, _ = shell(host, hostops.read_script(), sudo)
    try:
        states[host.name] = hostops.parse_read(host.name, out).units if ok else {}
    except ReleaseError:
        # A release record we cannot read does not change which units run.
        states[host.name] = {}
    return True


@operation(is_idempotent=False)
def read_units(states: dict[str, dict[str, str]], sudo: bool) -> Generator[Any, None, None]:
    yield FunctionCommand(_units, (states, sudo), {})


def _take_out(state: Any, host: Any, rows: list[Drained], address: str, timeout_s: float, sudo: bool) -> bool:
    for row in rows:
        result = lb.wait_drained(
            functools.partial(hostops.in_flight, host, address, [internal_port(row.item.port)]), timeout_s
        )
        row.wait = result.detail if result.drained else f"{result.detail}; stopped anyway"
        ok, _, err = shell(host, f"systemctl stop {shlex.quote(row.item.unit)}", sudo)
        row.stopped = ok
        if not ok:
            row.error = f"systemctl stop {row.item.unit}: {err.strip()[-200:]}"
    return True


@operation(is_idempotent=False)
def take_out(rows: list[Drained], address: str, timeout_s: float, sudo: bool) -> Generator[Any, None, None]:
    yield FunctionCommand(_take_out, (rows, address, timeout_s, sudo), {})


@dataclass
class Drainer:
    fleet: Fleet
    lb_hosts: Sequence[LbHost]
    timeout_s: float = lb.DRAIN_WINDOW_S

    def __post_init__(self) -> None:
        self.specs = {spec.name: spec for spec in self.fleet}
        # The plan as deployed (no exclusions): what runs, and what the rollout's nginx config lists.
        self.plans = {spec.name: plan_host(spec.config) for spec in self.fleet}
        self.lb = LoadBalancer(self.lb_hosts, backends_for(list(self.fleet), self.plans))

    def decide(self, leave: list[Leaving], outcome: DrainOutcome) -> DrainPlan | None:
        states: dict[str, dict[str, str]] = {}
        result = run_state(list(self.fleet), lambda s: read_units(states=states, sudo=sudo_for(s), name="units"))
        active = {
            (name, r.port): states.get(name, {}).get(r.unit_name) in RUNNING_STATES
            for name, plan in self.plans.items()
            for r in plan.replicas
        }
        for name in sorted(result.unreachable):
            # Counted as not serving: the last-backend rule then errs on keeping replicas in.
            outcome.errors.append(f"{name}: unreachable: its replicas count as not serving")
        routed, lb_result = self.lb.read()
        if lb_result.failed:
            host = sorted(lb_result.failed)[0]
            outcome.errors.append(f"load balancer {host}: {self.lb.errors.get(host, 'unreachable')}; nothing drained")
            return None
        down = {b for b in self.lb.backends if routed is not None and routed.is_down(b)}
        return plan_drain(leave, self.lb.backends, down, active)

    def run(self, reports: Mapping[str, HealthReport | None]) -> DrainOutcome:
        outcome = DrainOutcome()
        leave = [item for name, r in reports.items() if r is not None for item in leaving(r, self.plans[name])]
        if not leave:
            return outcome
        # The rollout's lock: a rollout rewrites nginx's config and starts units; one writer at a time.
        lock = FleetLock(fleet_dir(self.specs))
        try:
            lock.acquire()
        except LockedError as err:
            outcome.errors.append(f"{err}; nothing drained this pass")
            return outcome
        try:
            self._apply(self.decide(leave, outcome), outcome)
        finally:
            lock.release()
        return outcome

    def _apply(self, plan: DrainPlan | None, outcome: DrainOutcome) -> None:
        if plan is None:
            return
        outcome.already_out = list(plan.done)
        outcome.refused = [line for _, line in plan.refused]
        if not plan.drain:
            return
        applied = self.lb.apply(plan.down)
        if applied.failed:
            host = sorted(applied.failed)[0]
            outcome.errors.append(
                f"load balancer {host}: {self.lb.errors.get(host, 'unreachable')}; no replica stopped"
            )
            return
        rows: dict[str, list[Drained]] = {}
        for item, backend in plan.drain:
            rows.setdefault(item.host, []).append(Drained(item, backend.server))

        def build(spec: HostSpec) -> None:
            take_out(
                rows=rows[spec.name],
                address=local_address(spec.config),
                timeout_s=self.timeout_s,
                sudo=sudo_for(spec),
                name="drain",
            )

        result = run_state([self.specs[name] for name in rows], build)
        for name, host_rows in rows.items():
            for row in host_rows:
                if name in result.failed and not row.stopped and not row.error:
                    row.error = "lost the connection before the unit was stopped (its backend is down in nginx)"
            outcome.drained.extend(host_rows)
