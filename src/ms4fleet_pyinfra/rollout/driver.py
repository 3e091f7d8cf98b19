"""The rollout over the pyinfra API: one ``State`` per step of a wave, hosts in inventory order.

    read every host's release, health and place in the load balancer -> plan waves and check that the
    policy keeps capacity, counting the hosts already out of service (core; refused before anything
    stops). Each host's change is classified by the core from the plan its release was recorded with:
    live changes (no restart) are applied in service, never drained; every other host goes in waves:
        pre-stage all its hosts (nothing stops) -> for each batch of <= max-unavailable hosts:
            LB: mark the batch down, reload, old workers finish -> provisioning where it changed (packages,
            driver with its reboot, daemon.json with Docker's restart) -> switch (drain wait, stop, start, verify)
            -> roll back the hosts that failed -> LB: rejoin every host that serves
        gate: the next wave only when every host of this one rejoined at the new release

With ``deploy=True`` (a plain ``deploy.py`` run, ``ms4fleet_pyinfra.deploys.batched``) only the hosts that serve and
whose change is disruptive (``ms4fleet.rollout.changes.deploy_change``) go through the waves; the deploy itself
then applies everything else (first installs, hosts that do not serve, live changes), and images are not pinned
(a deploy applies the reference as the inventory writes it).

Any failure stops the rollout after its batch: failed hosts are rolled back, hosts not reached yet keep
their release, an unreachable host stays out of the load balancer. The report says which and why.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ms4fleet.config import ConfigError
from ms4fleet.hostplan import HostPlan, plan_for_data
from ms4fleet.imagepin import pin_configs
from ms4fleet.inventory import Fleet, HostSpec
from ms4fleet.progress import LineView
from ms4fleet.progress import Tracker as ProgressTracker
from ms4fleet.rollout.changes import Change, Classified, deploy_change, host_change, untrusted
from ms4fleet.rollout.gates import wave_gate
from ms4fleet.rollout.hoststate import REJOINING, HostRun, Phase
from ms4fleet.rollout.journal import Journal
from ms4fleet.rollout.lb import Routed
from ms4fleet.rollout.release import Release, now_iso, release_for
from ms4fleet.rollout.report import RolloutReport
from ms4fleet.rollout.waves import Policy, PolicyError, RolloutPlan, check_capacity, plan_waves, serving_floor
from ms4fleet.serving import ServingPlan, local_address, plan_host
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.peers import Member, check_members, stage_group
from ms4fleet.weights.request import WeightsRequest, by_files, request_for_host
from ms4fleet.weights.stage import target_for
from ms4fleet_pyinfra.deploys.host import provision, replan
from ms4fleet_pyinfra.facts import OsReleaseFact
from ms4fleet_pyinfra.operations import docker, weights
from ms4fleet_pyinfra.rollout import hostops
from ms4fleet_pyinfra.rollout.lbctl import LbHost, LoadBalancer, backends_for
from ms4fleet_pyinfra.rollout.session import StateResult, run_state, sudo_for
from ms4fleet_pyinfra.rollout.tracker import Listener, Tracker
from pyinfra import logger

ENGINE = "pyinfra"
# A load balancer that fails to take a verified host back is tried again before the rollout stops.
REJOIN_TRIES = 3
REJOIN_RETRY_S = 2.0
INTERRUPTED = "interrupted (SIGINT/SIGTERM) mid-rollout: continue with `ms4fleet rollout --resume`"


class Stop(Exception):
    """The rollout stops here; the message is the report's ``stopped`` line."""


@dataclass
class Rollout:
    fleet: Fleet
    policy: Policy
    lb_hosts: Sequence[LbHost] = ()
    listeners: list[Listener] = field(default_factory=list)
    tracker: Tracker = field(default_factory=Tracker)
    # The controller's journal of this fleet's rollouts (None: nothing is journaled, as in unit tests).
    journal: Journal | None = None
    resume: bool = False
    # Earlier runs of the rollout this one resumes (``ms4fleet.rollout.journal.summary``), for the report.
    earlier: list[dict[str, Any]] = field(default_factory=list)
    # A plain deploy's batches (see the module docstring).
    deploy: bool = False

    def __post_init__(self) -> None:
        """Everything decidable without a host is decided here: a bad host or option fails before any
        connection (``ConfigError``, ``PolicyError``, ``WeightsError``)."""
        self.specs = {spec.name: spec for spec in self.fleet}
        self.requests: dict[str, WeightsRequest] = {}
        for spec in self.fleet:
            if spec.config.weights is None:
                raise ConfigError(
                    spec.name, "weights", "is missing: a rollout needs ms4fleet_weights (source, revision)"
                )
            try:
                self.requests[spec.name] = request_for_host(spec.config)
            except WeightsError as err:
                raise ConfigError(spec.name, "weights", str(err).removeprefix(f"{spec.name}: ")) from None
        # Peer staging (weights.peers): every host of the rollout takes the revision through the core's tree,
        # before any host is drained; only from a mirror here (the hosts pull from it themselves).
        self.peer_members = [
            Member(spec.name, dict(spec.connection), dict(spec.data), spec.config, self.requests[spec.name])
            for spec in self.fleet
            if spec.config.weights is not None and spec.config.weights.peers
        ]
        if self.peer_members:
            check_members(self.peer_members, None)
        # Replicas and ports do not depend on the image: the load balancer's checks come before any request.
        # Without a load balancer (a plain deploy may have none) there is no backend to reach.
        self.lb: LoadBalancer | None = None
        if self.lb_hosts:
            backends = backends_for(list(self.fleet), {spec.name: plan_host(spec.config) for spec in self.fleet})
            self.lb = LoadBalancer(self.lb_hosts, backends)
        # The release names the image by digest, resolved once here: every later step plans from these configs.
        self.configs = (
            {spec.name: spec.config for spec in self.fleet}
            if self.deploy
            else pin_configs((spec.config, plan_for_data(spec.config, dict(spec.data)).image.id) for spec in self.fleet)
        )
        self.plans: dict[str, ServingPlan] = {name: plan_host(c) for name, c in self.configs.items()}
        self.hostplans: dict[str, HostPlan] = {
            spec.name: plan_for_data(self.configs[spec.name], dict(spec.data)) for spec in self.fleet
        }
        created = now_iso()
        self.targets: dict[str, Release] = {
            name: release_for(self.configs[name], plan, created, self.hostplans[name])
            for name, plan in self.plans.items()
        }
        self.changes: dict[str, Classified] = {}
        self.tracker.listeners.append(self._journal_phase)
        self.tracker.listeners.extend(self.listeners)
        self.tracker.targets = self.targets
        self.tracker.runs = {
            name: HostRun(name, len(self.plans[name].replicas), target=self.targets[name].id) for name in self.specs
        }
        self.out_of_lb: set[str] = set()
        # Hosts serving clients when the rollout read the fleet: once any did, the last one is never drained.
        self.serving_at_start: set[str] = set()
        # Deploy mode: hosts never installed, which the deploy installs after the batches (never marked down).
        self.left_to_deploy: set[str] = set()
        self.plan: RolloutPlan | None = None
        self.started_at = now_iso()

    # ------------------------------------------------------------------------------------------ steps

    def _log(self, event: str, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.write(event, **fields)

    def _journal_phase(self, run: HostRun, phase: Phase) -> None:
        self._log("phase", host=run.name, phase=str(phase), t=round(run.history[-1][1], 3), detail=run.detail)

    def _hosts(self, names: Sequence[str]) -> list[HostSpec]:
        return [self.specs[name] for name in names]

    def read(self) -> RolloutPlan:
        sudo = {name: sudo_for(spec) for name, spec in self.specs.items()}
        result = run_state(
            list(self.fleet),
            lambda s: hostops.read_host(
                tracker=self.tracker, address=local_address(s.config), sudo=sudo[s.name], name="read"
            ),
        )
        for name in sorted(result.unreachable):
            self.tracker.advance(name, Phase.UNREACHABLE, "unreachable before anything changed")
        unread = sorted(result.failed - result.unreachable)
        if result.unreachable or unread:
            first = (sorted(result.unreachable) or unread)[0]
            why = self.tracker.runs[first].detail or self.tracker.take_failure(first) or "cannot be read"
            raise Stop(f"{first}: {why}; nothing was changed")
        routed = self._read_lb()
        if self.deploy:
            self._check_converged()
        changing = set()
        for name in self.specs:
            facts = self.tracker.facts[name]
            current = facts.record.current
            self.tracker.runs[name].before = current.id if current else None
            # Real state: a host serves only with every unit active, every replica healthy and, where a load
            # balancer is driven, routed to by it. Any other host counts as unavailable.
            serving = facts.all_active and facts.healthy is not False and (routed is None or name in routed.up)
            if not serving:
                # Not serving now: it stays out of the load balancer until its switch is verified.
                self.out_of_lb.add(name)
            else:
                self.serving_at_start.add(name)
            change = self.changes[name] = (
                deploy_change(current, self.targets[name], facts.unit_sha256, bool(facts.converged))
                if self.deploy
                else host_change(current, self.targets[name])
            )
            run = self.tracker.runs[name]
            run.change, run.change_reasons = change.change.label, list(change.reasons)
            if self.deploy:
                # A host that serves nothing costs no capacity: one with a release is switched first and
                # rejoins once verified; one never installed is the deploy's to install (the load balancer
                # is left as it is for it). The deploy applies every other change itself.
                if (serving and change.change.disruptive) or (not serving and current is not None):
                    changing.add(name)
                else:
                    self.tracker.advance(name, Phase.UNCHANGED)
                    if current is None:
                        self.left_to_deploy.add(name)
            elif serving and change.change is Change.NONE:
                self.tracker.advance(name, Phase.UNCHANGED)
            elif not (serving and change.change is Change.LIVE):
                # Live changes of serving hosts are applied in service (apply_live), outside the waves.
                changing.add(name)
        fleet = list(self.specs)
        plan = plan_waves(fleet, changing, self.policy, unavailable=self.out_of_lb)
        if plan.waves or not self.deploy:
            check_capacity(fleet, self.out_of_lb, plan)
        self.plan = plan
        return plan

    def _check_converged(self) -> None:
        """Deploy mode: the core's converged check on each host whose record cannot say what it runs."""
        names = [n for n, f in self.tracker.facts.items() if untrusted(f.record.current, f.unit_sha256) is not None]
        result = run_state(
            self._hosts(names),
            lambda s: hostops.converged(
                tracker=self.tracker, config=s.config, data=s.data, sudo=sudo_for(s), name="converged check"
            ),
        )
        if result.failed:
            first = sorted(result.failed)[0]
            raise Stop(f"{first}: {self.tracker.take_failure(first) or 'converged check failed'}; nothing was changed")

    def _read_lb(self) -> Routed | None:
        if self.lb is None:
            return None
        routed, result = self.lb.read()
        if result.failed:
            host = sorted(result.failed)[0]
            raise Stop(f"load balancer {host}: {self.lb.errors.get(host, 'unreachable')}; nothing was changed")
        return routed

    def live(self) -> list[str]:
        """Serving hosts whose change restarts nothing: applied in place, never drained."""
        if self.deploy:
            return []
        return [n for n, c in self.changes.items() if c.change is Change.LIVE and n not in self.out_of_lb]

    def apply_live(self, names: Sequence[str]) -> None:
        def build(spec: HostSpec) -> None:
            from pyinfra.context import host

            if self.changes[spec.name].provisions:
                provision(replan(self.hostplans[spec.name], host.get_fact(OsReleaseFact)), sudo_for(spec))
            hostops.record_release(
                tracker=self.tracker, release=self.targets[spec.name], sudo=sudo_for(spec), name="record release"
            )

        result = run_state(self._hosts(names), build)
        for name in names:
            if name not in result.failed:
                self.tracker.advance(name, Phase.APPLIED)
        self._stop_on(result, names, "live change")

    def peer_stage(self, names: set[str]) -> None:
        """The rollout's hosts with weights.peers take the revision through the peer tree, before any is drained
        (each host's weights step then finds it verified); hosts whose request differs form their own tree."""
        members = [m for m in self.peer_members if m.name in names]
        for group in by_files(members, lambda member: member.request):
            progress = ProgressTracker(LineView(logger.info, f"peer staging to {len(group)} host(s)", "host"))
            try:
                report = stage_group(group, None, None, progress=progress)
            except WeightsError as err:
                raise Stop(f"peer staging: {err}; nothing was stopped") from None
            for line in report.summary():
                logger.info(line)
            self._log("peer staging", lines=report.summary())
            failed = [o for o in report.outcomes if o.status == "failed"]
            if failed:
                raise Stop(f"{failed[0].host}: peer staging: {failed[0].detail}; nothing was stopped")

    def prestage(self, names: Sequence[str]) -> None:
        def build(spec: HostSpec) -> None:
            name, sudo = spec.name, sudo_for(spec)
            config, data = self.configs[name], dict(spec.data)
            # Only the OS-independent parts of the plan are read here: the image and the weights staging.
            hp = self.hostplans[name]
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
        if self.lb is None:
            return
        if self.out_of_lb >= set(self.specs):
            if self.serving_at_start and len(self.specs) > 1:
                # check_capacity and switch_batch refuse this first; never let a bug drain the last host.
                raise Stop(f"{step}: would take the last serving host out of the load balancer")
            # No replica serves (a first rollout), or the one host of a one-host fleet switches (its warned
            # outage): nginx cannot be left with no replica up, so its config stays as it is.
            return
        down = sorted(self.out_of_lb - self.left_to_deploy)
        tries = REJOIN_TRIES if step == "rejoin" else 1
        for attempt in range(1, tries + 1):
            result = self.lb.apply(down)
            self._log("lb", step=step, down=down, ok=not result.failed, attempt=attempt)
            if not result.failed:
                return
            if attempt < tries:
                time.sleep(REJOIN_RETRY_S)
        host = sorted(result.failed)[0]
        why = self.lb.errors.get(host, "unreachable")
        raise Stop(f"load balancer {host}: {step}: {why} (after {tries} attempt(s))")

    def switch_batch(self, batch: Sequence[str]) -> None:
        serving = set(self.specs) - self.out_of_lb
        taken = serving & set(batch)
        floor = serving_floor(len(self.specs), self.policy)
        if taken and len(serving - taken) < floor:
            # The plan was checked, but hosts may have left service since (unreachable, not rejoined).
            raise Stop(
                f"{', '.join(batch)}: switching would leave {len(serving - taken)} host(s) serving, below {floor}; "
                "nothing more is stopped"
            )
        self.out_of_lb.update(batch)
        self.route("drain")
        for name in batch:
            self.tracker.advance(name, Phase.DRAINED)

        def build(spec: HostSpec) -> None:
            name = spec.name
            sudo = sudo_for(spec)
            plan, release = self.plans[name], self.targets[name]
            if self.changes[name].provisions:
                from pyinfra.context import host

                # The deploy's own provisioning: it restarts Docker only if daemon.json changed and reboots
                # only if the driver changed (and the reboot policy allows), on this batch's hosts alone.
                provision(replan(self.hostplans[name], host.get_fact(OsReleaseFact)), sudo)
            hostops.start_release(
                tracker=self.tracker, config=self.configs[name], plan=plan, release=release, sudo=sudo, name="start"
            )
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
        back = [n for n in batch if self.tracker.runs[n].phase in REJOINING]
        self.out_of_lb.difference_update(back)
        try:
            self.route("rejoin")
        except Stop as stop:
            # Verified but still out: the report says so, and the next run sees them down and rejoins them.
            self.out_of_lb.update(back)
            raise Stop(f"{stop}; verified but still out of the load balancer: {', '.join(back)}") from None
        for name in back:
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

    def report(self, stopped: str = "") -> RolloutReport:
        """The report as the rollout stands now (during it: the hosts' phases so far; the report writer's
        ``build``)."""
        return RolloutReport(
            inventory=self.fleet.path,
            engine=ENGINE,
            started_at=self.started_at,
            plan=self.plan or RolloutPlan(self.policy, (), ()),
            runs=[self.tracker.runs[name] for name in self.specs],
            duration_s=self.tracker.now(),
            stopped=stopped,
            notes=list(self.plan.warnings) if self.plan else [],
            earlier=self.earlier,
        )

    def run(self) -> RolloutReport:
        self.started_at = now_iso()
        stopped = ""
        self._log(
            "start",
            resume=self.resume,
            inventory=self.fleet.path,
            engine=ENGINE,
            policy=self.policy.to_dict(),
            targets={name: release.id for name, release in self.targets.items()},
        )
        try:
            try:
                plan = self.read()
            except PolicyError as err:
                self._log("end", outcome="refused", exit_code=2, stopped=str(err))
                raise
            self._log("plan", plan=plan.to_dict(), out_of_lb=sorted(self.out_of_lb))
            self.peer_stage({name for wave in plan.waves for name in wave.hosts})
            if plan.waves:
                self.route("initial configuration")
            live = self.live()
            if live:
                self.apply_live(live)
            for wave in plan.waves:
                self.prestage(wave.hosts)
                for batch in wave.batches:
                    self.switch_batch(batch)
                    blocked = [n for n in batch if self.tracker.runs[n].phase is not Phase.REJOINED]
                    if blocked:
                        raise Stop(wave_gate(self.tracker.runs[n] for n in batch).reason)
        except Stop as stop:
            stopped = str(stop)
        except KeyboardInterrupt:
            # Hosts mid-switch stay out of the load balancer; --resume reads them as unavailable and switches
            # them first, and none rejoins before it passes verification.
            stopped = INTERRUPTED
            self._log("interrupted", stopped=stopped, out_of_lb=sorted(self.out_of_lb))
        report = self.report(stopped)
        if stopped != INTERRUPTED:
            self._log("end", outcome=report.outcome, exit_code=report.exit_code, stopped=stopped)
        return report
