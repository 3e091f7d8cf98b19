"""The operations of one host's rollout steps. Each yields ``FunctionCommand``s that record into the
``Tracker`` and return False to fail only that host (an exception or ``OperationError`` would stop every
host of the State).

+ ``read_host``: the release record, the units' state and each running replica's GET /health.
+ ``converged``: the core's converged check (a deploy asks it where a host's record cannot be trusted).
+ ``stage_units``, ``gpu_health``, ``headroom``: pre-stage (with the engine's image and weights operations):
  the new unit files beside the running ones, the GPU health gate, and the headroom gate counting the memory
  the old replicas will free.
+ ``start_release``: wait for in-flight requests, stop the old replicas, install and start the new ones.
+ ``await_release``: wait until systemd reports them ready, verify every replica, record the release.
+ ``rollback``: the previous release's units back, started and verified.
+ ``record_release``: a live change applied (nothing restarted): the release recorded with its new plan.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pyinfra.api.command import FunctionCommand
from pyinfra.api.operation import operation

from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.converged import check_data
from ms4fleet.health import HealthError, gate, parse_health
from ms4fleet.hostoutput import sections
from ms4fleet.hostplan import gates
from ms4fleet.hostscripts import python_command
from ms4fleet.rollout import hostread, lb
from ms4fleet.rollout.hoststate import Phase
from ms4fleet.rollout.release import RELEASE_FILE, STAGED_DIR, Release, ReleaseError, ReleaseRecord
from ms4fleet.rollout.switch import ROLLBACK_CHECKS, ROLLBACK_TIMEOUT_S, release_ports, stop_script, switch_script
from ms4fleet.serving import ServingPlan, local_address, served_model_name, timeout_start_s
from ms4fleet.verify import VerifyReport, verify
from ms4fleet.weights.startcheck import verifier_file
from ms4fleet_pyinfra.facts import Probe
from ms4fleet_pyinfra.operations.serving import _read_host_secret as read_host_secret
from ms4fleet_pyinfra.operations.serving import headroom_verdicts
from ms4fleet_pyinfra.rollout.session import shell
from ms4fleet_pyinfra.rollout.tracker import HostFacts, Tracker
from ms4fleet_pyinfra.tunnel import forwarded

JOURNAL_LINES = 300


def parse_read(host: str, text: str) -> HostFacts:
    read = hostread.parse(text)
    return HostFacts(ReleaseRecord.parse(host, read.record_text), read.active, unit_sha256=read.sha256)


def read_script() -> str:
    """Prints the release record, a separator, then one ``unit is-active sha256`` line per ms4fleet vLLM unit."""
    return hostread.READ_SCRIPT


def _read(state: Any, host: Any, tracker: Tracker, address: str, sudo: bool) -> bool:
    ok, out, err = shell(host, hostread.READ_SCRIPT, sudo)
    if not ok:
        return tracker.fail(host.name, f"cannot read {RELEASE_FILE}: {err.strip()[-200:]}")
    try:
        facts = parse_read(host.name, out)
    except ReleaseError as err:
        return tracker.fail(host.name, str(err).removeprefix(f"{host.name}: "))
    ports = _serving_ports(facts)
    if ports:
        facts.healthy = all(_healthy(host, address, port) for port in ports)
    tracker.facts[host.name] = facts
    return True


def _healthy(host: Any, address: str, port: int) -> bool:
    try:
        with forwarded(host, port, address) as url:
            return httpx.get(f"{url}/health", timeout=5.0).status_code == 200
    except (httpx.HTTPError, OSError):
        return False


@operation(is_idempotent=False)
def read_host(tracker: Tracker, address: str, sudo: bool) -> Generator[Any, None, None]:
    yield FunctionCommand(_read, (tracker, address, sudo), {})


def _converged(
    state: Any, host: Any, tracker: Tracker, config: HostConfig, data: Mapping[str, Any], sudo: bool
) -> bool:
    def read(script: str) -> dict[str, list[str]]:
        _, out, _ = shell(host, f"sh -c {shlex.quote(script)} 2>/dev/null || true", sudo)
        return sections(out.splitlines())

    try:
        found = check_data(host.name, config, dict(data), read)
    except ConfigError:
        # An OS the core does not plan for: not converged; the deploy itself then names the problem.
        tracker.facts[host.name].converged = False
        return True
    tracker.facts[host.name].converged = found.converged
    return True


@operation(is_idempotent=False)
def converged(tracker: Tracker, config: HostConfig, data: Mapping[str, Any], sudo: bool) -> Generator[Any, None, None]:
    """The core's converged check (the deploy's own), read-only, into the host's facts."""
    yield FunctionCommand(_converged, (tracker, config, data, sudo), {})


# ------------------------------------------------------------------------------------------ pre-stage


def _write_files(host: Any, files: Mapping[str, str], sudo: bool, mode: str = "644") -> tuple[bool, str]:
    """Write each file atomically from stdin (unit texts carry no secret, but stdin keeps argv short)."""
    for path, text in files.items():
        quoted = shlex.quote(path)
        script = (
            f"mkdir -p {shlex.quote(path.rsplit('/', 1)[0])} && cat > {quoted}.tmp && "
            f"chmod {mode} {quoted}.tmp && mv {quoted}.tmp {quoted}"
        )
        ok, _, err = shell(host, script, sudo, stdin=text)
        if not ok:
            return False, f"writing {path}: {err.strip()[-200:]}"
    return True, ""


def _stage_units(state: Any, host: Any, tracker: Tracker, release: Release, sudo: bool) -> bool:
    files = {f"{STAGED_DIR}/{release.id}/{name}": text for name, text in release.units.items()}
    ok, why = _write_files(host, files, sudo)
    if ok:
        # The units' ExecStartPre runs the weights verifier: a release brings the verifier it was planned with.
        path, source, mode = verifier_file()
        ok, why = _write_files(host, {path: source.decode()}, sudo, mode=f"{mode:o}")
    return ok or tracker.fail(host.name, f"pre-stage: {why}")


def _headroom(state: Any, host: Any, tracker: Tracker, config: HostConfig, plan: ServingPlan, sudo: bool) -> bool:
    probe = host.get_fact(Probe, _sudo=sudo)
    if probe.report is None:
        return tracker.fail(host.name, f"pre-stage headroom: the probe failed: {probe.error}")
    # The switch stops every replica on the host, those the new release no longer has too.
    verdicts = headroom_verdicts(config, plan, probe.report, every_replica=True)
    blocked = [(i, r) for i, verdict, r in verdicts if verdict == "does-not-fit"]
    if blocked:
        details = "; ".join(f"replica {i}: {' '.join(reasons[-2:])}" for i, reasons in blocked)
        return tracker.fail(host.name, f"pre-stage headroom: does-not-fit even after the old replicas stop: {details}")
    tracker.advance(host.name, Phase.PRESTAGED)
    return True


@operation(is_idempotent=False)
def stage_units(tracker: Tracker, release: Release, sudo: bool) -> Generator[Any, None, None]:
    yield FunctionCommand(_stage_units, (tracker, release, sudo), {})


def _gpu_health(state: Any, host: Any, tracker: Tracker, config: HostConfig, plan: ServingPlan, sudo: bool) -> bool:
    # Before the host leaves the load balancer: a replica must not come back on a GPU the core excludes.
    ok, out, err = shell(host, python_command("health.py"), sudo)
    try:
        report = parse_health(out, host.name)
    except HealthError as exc:
        return tracker.fail(host.name, f"pre-stage GPU health: {exc if ok else err.strip()[-200:]}")
    blocked = gate(report, config.gpu.count, {r.index: r.gpus for r in plan.replicas})
    return not blocked or tracker.fail(host.name, "pre-stage GPU health: " + " | ".join(blocked))


@operation(is_idempotent=False)
def gpu_health(tracker: Tracker, config: HostConfig, plan: ServingPlan, sudo: bool) -> Generator[Any, None, None]:
    yield FunctionCommand(_gpu_health, (tracker, config, plan, sudo), {})


@operation(is_idempotent=False)
def headroom(tracker: Tracker, config: HostConfig, plan: ServingPlan, sudo: bool) -> Generator[Any, None, None]:
    yield FunctionCommand(_headroom, (tracker, config, plan, sudo), {})


# ------------------------------------------------------------------------------------------- switch


def in_flight(host: Any, address: str, ports: list[int]) -> float | None:
    """Requests the replicas on ``ports`` hold (None: a /metrics answer other than 200)."""
    total = 0.0
    for port in ports:
        try:
            with forwarded(host, port, address) as url:
                response = httpx.get(f"{url}/metrics", timeout=5.0)
            if response.status_code != 200:
                return None
            total += lb.in_flight(response.text)
        except (httpx.HTTPError, ValueError, OSError):
            # A replica that no longer answers holds no request a client could still receive.
            continue
    return total


def _drain(host: Any, tracker: Tracker, address: str, ports: list[int]) -> None:
    """Wait until the old replicas (at ``address`` on the host) hold no request (the LB sends them none)."""
    if ports:
        result = lb.wait_drained(lambda: in_flight(host, address, ports), timeout_s=lb.DRAIN_WINDOW_S)
        if not result.drained:
            tracker.runs[host.name].detail = f"drain: {result.detail}; stopped anyway"


def _serving_ports(facts: HostFacts) -> list[int]:
    """The ports vLLM itself listens on in the replicas running now (from the release they run)."""
    current = facts.record.current
    if current is None or not facts.all_active:
        return []
    ports = release_ports(current)
    return [ports[unit] for unit in sorted(facts.units) if unit in ports]


def _install(
    host: Any, units: Mapping[str, str], staged_id: str | None, old: list[str], sudo: bool, start: bool = False
) -> tuple[bool, str]:
    """Stop every old replica, put the wanted unit files in place, remove units no longer wanted, reload
    systemd and (``start``) start the new replicas without waiting: one SSH round trip while nothing serves
    (the core's ``switch_script``)."""
    if staged_id is None:
        # Unit texts not staged on the host (a rollback to what the record holds): upload them first, beside.
        staged = {f"{STAGED_DIR}/previous/{name}": text for name, text in units.items()}
        ok, why = _write_files(host, staged, sudo)
        if not ok:
            return False, why
    source_dir = f"{STAGED_DIR}/{staged_id if staged_id is not None else 'previous'}"
    ok, _, err = shell(host, switch_script(list(units), source_dir, old, start=start), sudo)
    return ok, "" if ok else err.strip()[-300:]


def _wait_ready(host: Any, units: list[str], timeout_s: float, sudo: bool) -> tuple[bool, str, float | None]:
    """Wait until systemd says each unit is ready (units hold "activating" until vLLM answers /health).
    Returns (ok, why, the slowest unit's start-to-ready seconds as systemd measured it)."""
    deadline = time.monotonic() + timeout_s
    query = " ".join(f"$(systemctl is-active {shlex.quote(u)} || true)" for u in units)
    while True:
        _, out, _ = shell(host, f"echo {query}", sudo)
        states = out.split()
        if states and all(s == "active" for s in states):
            break
        if any(s == "failed" for s in states) or time.monotonic() > deadline:
            failed = [u for u, s in zip(units, states, strict=False) if s != "active"]
            return False, f"{', '.join(failed)} did not start ({' '.join(states)})", None
        time.sleep(0.2)
    props = "InactiveExitTimestampMonotonic,ActiveEnterTimestampMonotonic"
    _, out, _ = shell(host, f"systemctl show -p {props} --value {' '.join(shlex.quote(u) for u in units)}", sudo)
    numbers = [int(v) for v in out.split() if v.isdigit()]
    spans = [(numbers[i + 1] - numbers[i]) / 1e6 for i in range(0, len(numbers) - 1, 2)]
    return True, "", max(spans) if spans else None


def _journal(host: Any, units: list[str], sudo: bool) -> str:
    flags = " ".join(f"-u {shlex.quote(u)}" for u in units)
    _, out, _ = shell(host, f"journalctl --no-pager -o cat -n {JOURNAL_LINES} {flags}", sudo)
    return out


def _short(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _verify(
    host: Any, tracker: Tracker, config: HostConfig, plan: ServingPlan, sudo: bool
) -> tuple[bool, str, list[Any]]:
    api_key = read_host_secret(host, config, sudo)
    gate = gates(config, plan)
    checks = frozenset(gate.verify_checks)
    model = plan.served_model_name
    results: list[dict[str, Any]] = []
    causes: list[dict[str, Any]] = []
    failures: list[str] = []

    def check(port: int) -> VerifyReport:
        with forwarded(host, port, local_address(config)) as url:
            return verify(
                url,
                model,
                checks=checks,
                timeout_s=gate.verify_timeout_s,
                api_key=api_key,
                open_endpoint=config.serving.open_endpoint,
            )

    # Replicas are independent: verify them at once (each through its own channel of the SSH connection).
    with ThreadPoolExecutor(max_workers=len(plan.replicas)) as pool:
        reports = list(pool.map(check, [r.internal_port for r in plan.replicas]))
    for replica, report in zip(plan.replicas, reports, strict=True):
        failed = [f"{c.name}: {c.detail}" for c in report.checks if c.status == "fail"]
        results.append({"replica": replica.index, "port": replica.port, "ok": report.ok, "failed": failed})
        if not report.ok:
            first = failed[0] if failed else "unreachable"
            failures.append(
                f"replica {replica.index} (port {replica.port}) failed {len(failed)} check(s), first {_short(first)}"
            )
            causes.extend(c.to_dict() for c in report.causes if c.id not in {k["id"] for k in causes})
    tracker.runs[host.name].verification = results
    return not failures, "; ".join(failures), causes


def _start_release(
    state: Any, host: Any, tracker: Tracker, config: HostConfig, plan: ServingPlan, release: Release, sudo: bool
) -> bool:
    facts = tracker.facts[host.name]
    _drain(host, tracker, local_address(config), _serving_ports(facts))
    # The gap starts with the stop command, not when it returns.
    tracker.advance(host.name, Phase.STOPPED)
    ok, why = _install(host, release.units, release.id, sorted(facts.units), sudo, start=True)
    return ok or tracker.fail(host.name, f"stop, install, start: {why}")


def _await_release(
    state: Any, host: Any, tracker: Tracker, config: HostConfig, plan: ServingPlan, release: Release, sudo: bool
) -> bool:
    units = [r.unit_name for r in plan.replicas]
    ok, why, ready_s = _wait_ready(host, units, timeout_start_s(plan.profile), sudo)
    if not ok:
        return tracker.fail(host.name, f"start: {why}", _causes(host, units, sudo))
    tracker.runs[host.name].start_to_ready_s = ready_s
    tracker.advance(host.name, Phase.STARTED)
    return _verify_and_record(host, tracker, config, plan, release, sudo)


def _causes(host: Any, units: list[str], sudo: bool) -> list[dict[str, Any]]:
    from ms4fleet.causes import name_causes

    return [cause.to_dict() for cause in name_causes(_journal(host, units, sudo))]


def _verify_and_record(
    host: Any, tracker: Tracker, config: HostConfig, plan: ServingPlan, release: Release, sudo: bool
) -> bool:
    units = [r.unit_name for r in plan.replicas]
    ok, why, causes = _verify(host, tracker, config, plan, sudo)
    if not ok:
        if not causes:
            causes = _causes(host, units, sudo)
        return tracker.fail(host.name, f"verify: {why}", causes)
    record = tracker.facts[host.name].record.advance(release)
    written, why = _write_files(host, {RELEASE_FILE: record.to_json()}, sudo)
    if not written:
        return tracker.fail(host.name, f"record release: {why}")
    tracker.facts[host.name] = HostFacts(record, dict.fromkeys(units, "active"))
    tracker.advance(host.name, Phase.VERIFIED)
    return True


def _record(state: Any, host: Any, tracker: Tracker, release: Release, sudo: bool) -> bool:
    record = tracker.facts[host.name].record.advance(release)
    written, why = _write_files(host, {RELEASE_FILE: record.to_json()}, sudo)
    if not written:
        return tracker.fail(host.name, f"record release: {why}")
    tracker.facts[host.name].record = record
    return True


@operation(is_idempotent=False)
def record_release(tracker: Tracker, release: Release, sudo: bool) -> Generator[Any, None, None]:
    yield FunctionCommand(_record, (tracker, release, sudo), {})


@operation(is_idempotent=False)
def start_release(
    tracker: Tracker, config: HostConfig, plan: ServingPlan, release: Release, sudo: bool
) -> Generator[Any, None, None]:
    """Drain wait, old replicas stopped, new units in place and started (not waited for)."""
    yield FunctionCommand(_start_release, (tracker, config, plan, release, sudo), {})


@operation(is_idempotent=False)
def await_release(
    tracker: Tracker, config: HostConfig, plan: ServingPlan, release: Release, sudo: bool
) -> Generator[Any, None, None]:
    """Ready (systemd), verified, recorded. A separate operation so that pyinfra starts every host of the
    batch before it waits for the first: the hosts of a batch load in parallel."""
    yield FunctionCommand(_await_release, (tracker, config, plan, release, sudo), {})


# ------------------------------------------------------------------------------------------ rollback


def _rollback(state: Any, host: Any, tracker: Tracker, config: HostConfig, sudo: bool) -> bool:
    facts = tracker.facts[host.name]
    previous = facts.record.current
    tracker.advance(host.name, Phase.ROLLING_BACK)
    wanted = sorted(tracker.targets[host.name].units)
    if previous is None:
        # Nothing ran here before this rollout: leave the host stopped rather than serving a bad release.
        shell(host, stop_script(wanted), sudo)
        return tracker.fail(host.name, "rollback: no previous release on this host; its new replicas are stopped")
    ok, why = _install(host, previous.units, None, wanted, sudo, start=True)
    if not ok:
        return tracker.fail(host.name, f"rollback: install units: {why}")
    units = sorted(previous.units)
    ok, why, _ = _wait_ready(host, units, timeout_start_s(config.profile), sudo)
    if not ok:
        return tracker.fail(host.name, f"rollback: start: {why}")
    by_unit = release_ports(previous)
    ports = [by_unit.get(unit) for unit in units]
    model = served_model_name(config)
    api_key = read_host_secret(host, config, sudo)
    for port in ports:
        if port is None:
            continue
        with forwarded(host, port, local_address(config)) as url:
            report = verify(url, model, checks=set(ROLLBACK_CHECKS), timeout_s=ROLLBACK_TIMEOUT_S, api_key=api_key)
        if not report.ok:
            return tracker.fail(host.name, f"rollback: the previous release does not serve on port {port} either")
    return True


@operation(is_idempotent=False)
def rollback(tracker: Tracker, config: HostConfig, sudo: bool) -> Generator[Any, None, None]:
    yield FunctionCommand(_rollback, (tracker, config, sudo), {})
