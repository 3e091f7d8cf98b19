"""The rollout over the pyinfra API: one ``State`` per step of a wave, hosts in inventory order.

    read every host's release -> plan waves (core) -> for each wave:
        pre-stage all its hosts (nothing stops) -> for each batch of <= max-unavailable hosts:
            LB: mark the batch down, reload, old workers finish -> switch (drain wait, stop, start, verify)
            -> roll back the hosts that failed -> LB: rejoin every host that serves
        gate: the next wave only when every host of this one rejoined at the new release

Any failure stops the rollout after its batch: failed hosts are rolled back, hosts not reached yet keep
their release, an unreachable host stays out of the load balancer. The report says which and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ms4fleet.config import ConfigError
from ms4fleet.hostplan import plan_for_data
from ms4fleet.inventory import Fleet, HostSpec
from ms4fleet.rollout.gates import wave_gate
from ms4fleet.rollout.hoststate import HostRun, Phase
from ms4fleet.rollout.release import Release, now_iso, release_for
from ms4fleet.rollout.report import RolloutReport
from ms4fleet.rollout.waves import Policy, RolloutPlan, plan_waves
from ms4fleet.serving import ServingPlan, plan_host
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.request import WeightsRequest, request_for_host
from ms4fleet.weights.stage import target_for
from ms4fleet_pyinfra.operations import docker, weights
from ms4fleet_pyinfra.rollout import hostops
from ms4fleet_pyinfra.rollout.lbctl import LbHost, LoadBalancer, backends_for
from ms4fleet_pyinfra.rollout.session import StateResult, run_state, sudo_for
from ms4fleet_pyinfra.rollout.tracker import Listener, Tracker

ENGINE = "pyinfra"


class Stop(Exception):
    """The rollout stops here; the message is the report's ``stopped`` line."""


@dataclass
class Rollout:
    fleet: Fleet
    policy: Policy
    lb_hosts: Sequence[LbHost] = ()
    listeners: list[Listener] = field(default_factory=list)
    tracker: Tracker = field(default_factory=Tracker)

    def __post_init__(self) -> None:
        """Everything decidable without a host is decided here: a bad host or option fails before any
        connection (``ConfigError``, ``PolicyError``, ``WeightsError``)."""
        self.specs = {spec.name: spec for spec in self.fleet}
        self.configs = {spec.name: spec.config for spec in self.fleet}
        for name, config in self.configs.items():
            if config.weights is None:
                raise ConfigError(name, "weights", "is missing: a rollout needs ms4fleet_weights (source, revision)")
        self.plans: dict[str, ServingPlan] = {name: plan_host(c) for name, c in self.configs.items()}
        created = now_iso()
        self.targets: dict[str, Release] = {
            name: release_for(self.configs[name], plan, created) for name, plan in self.plans.items()
        }
        self.requests: dict[str, WeightsRequest] = {}
        for name, config in self.configs.items():
            try:
                self.requests[name] = request_for_host(config)
            except WeightsError as err:
                raise ConfigError(name, "weights", str(err).removeprefix(f"{name}: ")) from None
        self.lb = LoadBalancer(self.lb_hosts, backends_for(list(self.fleet), self.plans)) if self.lb_hosts else None
        self.tracker.listeners.extend(self.listeners)
        self.tracker.targets = self.targets
        self.tracker.runs = {
            name: HostRun(name, len(self.plans[name].replicas), target=self.targets[name].id) for name in self.specs
        }
        self.out_of_lb: set[str] = set()
        self.plan: RolloutPlan | None = None

    # ------------------------------------------------------------------------------------------ steps

    def _hosts(self, names: Sequence[str]) -> list[HostSpec]:
        return [self.specs[name] for name in names]

    def read(self) -> RolloutPlan:
        sudo = {name: sudo_for(spec) for name, spec in self.specs.items()}
        result = run_state(
            list(self.fleet), lambda s: hostops.read_host(tracker=self.tracker, sudo=sudo[s.name], name="read")
        )
        for name in sorted(result.unreachable):
            self.tracker.advance(name, Phase.UNREACHABLE, "unreachable before anything changed")
        unread = sorted(result.failed - result.unreachable)
        if result.unreachable or unread:
            first = (sorted(result.unreachable) or unread)[0]
            why = self.tracker.runs[first].detail or self.tracker.take_failure(first) or "cannot be read"
            raise Stop(f"{first}: {why}; nothing was changed")
        changing = set()
        for name in self.specs:
            facts = self.tracker.facts[name]
            current = facts.record.current
            self.tracker.runs[name].before = current.id if current else None
            if current is not None and current.id == self.targets[name].id and facts.all_active:
                self.tracker.advance(name, Phase.UNCHANGED)
            else:
                changing.add(name)
            if not facts.all_active:
                # Not serving now: it stays out of the load balancer until its switch is verified.
                self.out_of_lb.add(name)
        self.plan = plan_waves(list(self.specs), changing, self.policy)
        return self.plan

    def prestage(self, names: Sequence[str]) -> None:
        def build(spec: HostSpec) -> None:
            name, sudo = spec.name, sudo_for(spec)
            config, data = self.configs[name], dict(spec.data)
            # Only the OS-independent parts of the plan are read here: the image and the weights staging.
            hp = plan_for_data(config, data)
            if hp.image.ref is not None and hp.image.obtain != "none":
                docker.image(
                    ref=hp.image.ref, archive=hp.image.archive, image_id=hp.image.id, name="vLLM image", _sudo=sudo
                )
            weights.weights(
                request=self.requests[name],
                target=target_for(name, dict(spec.connection), data),
                staging_root=hp.require_weights().staging_dir,
                name="weights",
                _sudo=sudo,
            )
            hostops.stage_units(tracker=self.tracker, release=self.targets[name], sudo=sudo, name="stage units")
            hostops.gpu_health(
                tracker=self.tracker, config=config, plan=self.plans[name], sudo=sudo, name="GPU health gate"
            )
            hostops.headroom(tracker=self.tracker, config=config, plan=self.plans[name], sudo=sudo, name="headroom")

        result = run_state(self._hosts(names), build)
        self._stop_on(result, names, "pre-stage")

    def _stop_on(self, result: StateResult, names: Sequence[str], step: str) -> None:
        """After a step that changed nothing: mark unreachable hosts, stop on any failure."""
        if not result.failed:
            return
        for name in names:
            if name in result.unreachable:
                self.tracker.advance(name, Phase.UNREACHABLE, f"{step}: unreachable")
                self.out_of_lb.add(name)
            elif name in result.failed:
                why = self.tracker.take_failure(name) or f"{step} failed (see the log above)"
                self.tracker.runs[name].detail = why
        first = next(n for n in names if n in result.failed)
        raise Stop(f"{first}: {self.tracker.runs[first].detail}; nothing was stopped")

    def route(self, step: str) -> None:
        if self.lb is None or self.out_of_lb >= set(self.specs):
            # No replica serves (a first rollout): there is nothing to route to or drain yet.
            return
        result = self.lb.apply(self.out_of_lb)
        if result.failed:
            host = sorted(result.failed)[0]
            why = self.lb.errors.get(host, "unreachable")
            raise Stop(f"load balancer {host}: {step}: {why}")

    def switch_batch(self, batch: Sequence[str]) -> None:
        self.out_of_lb.update(batch)
        self.route("drain")
        for name in batch:
            self.tracker.advance(name, Phase.DRAINED)

        def build(spec: HostSpec) -> None:
            name = spec.name
            sudo = sudo_for(spec)
            plan, release = self.plans[name], self.targets[name]
            hostops.start_release(tracker=self.tracker, plan=plan, release=release, sudo=sudo, name="start")
            hostops.await_release(
                tracker=self.tracker, config=self.configs[name], plan=plan, release=release, sudo=sudo, name="verify"
            )

        result = run_state(self._hosts(batch), build)
        to_roll_back = []
        for name in batch:
            run = self.tracker.runs[name]
            if name not in result.failed:
                continue
            why = self.tracker.take_failure(name)
            if why is None or name in result.unreachable:
                self.tracker.advance(name, Phase.UNREACHABLE, run.detail or "lost the connection mid-switch")
            else:
                run.detail = why
                to_roll_back.append(name)
        self.rollback(to_roll_back)
        serving = [n for n in batch if self.tracker.runs[n].phase in {Phase.VERIFIED, Phase.ROLLING_BACK}]
        self.out_of_lb.difference_update(serving)
        self.route("rejoin")
        for name in serving:
            run = self.tracker.runs[name]
            self.tracker.advance(name, Phase.REJOINED if run.phase is Phase.VERIFIED else Phase.ROLLED_BACK)

    def rollback(self, names: Sequence[str]) -> None:
        if not names:
            return
        reasons = {name: self.tracker.runs[name].detail for name in names}

        def build(spec: HostSpec) -> None:
            hostops.rollback(tracker=self.tracker, config=self.configs[spec.name], sudo=sudo_for(spec), name="rollback")

        result = run_state(self._hosts(names), build)
        for name in names:
            run = self.tracker.runs[name]
            if name in result.unreachable or (name in result.failed and run.phase is not Phase.ROLLING_BACK):
                self.tracker.advance(name, Phase.UNREACHABLE, "lost the connection during rollback")
            elif name in result.failed:
                why = self.tracker.take_failure(name) or "rollback failed"
                self.tracker.advance(name, Phase.FAILED, f"{reasons[name]}; {why}")
            else:
                # The reason for the rollback stays the host's detail: it is what the report must say.
                run.detail = reasons[name]

    # ------------------------------------------------------------------------------------------- run

    def run(self) -> RolloutReport:
        started_at = now_iso()
        stopped = ""
        try:
            plan = self.read()
            if plan.waves:
                self.route("initial configuration")
            for wave in plan.waves:
                self.prestage(wave.hosts)
                for batch in wave.batches:
                    self.switch_batch(batch)
                    blocked = [n for n in batch if self.tracker.runs[n].phase is not Phase.REJOINED]
                    if blocked:
                        raise Stop(wave_gate(self.tracker.runs[n] for n in batch).reason)
        except Stop as stop:
            stopped = str(stop)
        return RolloutReport(
            inventory=self.fleet.path,
            engine=ENGINE,
            started_at=started_at,
            plan=self.plan or RolloutPlan(self.policy, (), ()),
            runs=[self.tracker.runs[name] for name in self.specs],
            duration_s=self.tracker.now(),
            stopped=stopped,
            notes=list(self.plan.warnings) if self.plan else [],
        )
