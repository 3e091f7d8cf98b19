"""Serving: the secrets EnvironmentFile, vLLM unit files from the core, stale units, and the two per-host
gates (headroom before any replica (re)starts, endpoint verification after)."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable, Generator
from typing import Any

from pyinfra.api.command import FunctionCommand, StringCommand
from pyinfra.api.operation import operation
from pyinfra.context import host

from ms4fleet import paths
from ms4fleet.apikey import ApiKeyError
from ms4fleet.config import HostConfig
from ms4fleet.converged import VERIFIED_FILE, record_command, verified_record
from ms4fleet.headroom import check_plan
from ms4fleet.health import HealthError, gate, parse_health
from ms4fleet.hostscripts import python_command
from ms4fleet.secrets import controller_value, env_file_script, secret_path, service_secret_refs
from ms4fleet.serving import ServingPlan, local_address
from ms4fleet.verify import verify
from ms4fleet_pyinfra.facts import EnvFileState, FileSha256, Probe, VllmUnits
from ms4fleet_pyinfra.report import fail, say
from ms4fleet_pyinfra.tunnel import forwarded


@operation()
def uploaded_secrets(config: HostConfig) -> Generator[Any, None, None]:
    """Secrets the controller supplies (an environment variable's value, the generated API key), written to
    the host's 0600 secret file through stdin (never an argument, a log line or a --diff)."""
    pending = False
    for variable, (name, ref) in service_secret_refs(config).items():
        if not ref.supplied:
            continue
        try:
            value = controller_value(ref)
        except ApiKeyError as err:
            yield FunctionCommand(fail, (f"{variable}: {err}",), {})
            return
        if not value:
            yield FunctionCommand(fail, (f"{variable}: environment variable {ref.env} is not set here",), {})
            return
        dest = secret_path(ref, name)
        wanted = hashlib.sha256(f"{value}\n".encode()).hexdigest()
        if host.get_fact(FileSha256, path=dest) == wanted:
            continue
        pending = True
        script = (
            f"umask 077; mkdir -p {shlex.quote(paths.SECRETS_DIR)}; "
            f"cat > {shlex.quote(dest)}.tmp && mv {shlex.quote(dest)}.tmp {shlex.quote(dest)}"
        )
        yield StringCommand("sh", "-c", shlex.quote(script), _stdin=f"{value}\n")
    if not pending:
        host.noop("secret files up to date")


@operation()
def env_file(config: HostConfig) -> Generator[Any, None, None]:
    """The service's EnvironmentFile, built on the host by the core's script (changes only when bytes differ)."""
    state = host.get_fact(EnvFileState, script=env_file_script(config, check=True))
    if state == "unchanged":
        host.noop(f"{paths.ENV_FILE} up to date")
        return
    yield StringCommand("sh", "-c", shlex.quote(env_file_script(config)))


@operation()
def stale_units(wanted: tuple[str, ...]) -> Generator[Any, None, None]:
    """Stop, disable and remove ms4fleet vLLM units the plan no longer has (fewer replicas than before)."""
    units: dict[str, Any] = host.get_fact(VllmUnits)
    stale = sorted(set(units) - set(wanted))
    if not stale:
        host.noop("no stale vLLM units")
        return
    for unit in stale:
        yield StringCommand("systemctl", "disable", "--now", unit, "||", "true")
        yield StringCommand("rm", "-f", f"{paths.SYSTEMD_DIR}/{unit}")
    yield StringCommand("systemctl", "daemon-reload")


def _inactive(plan: ServingPlan) -> bool:
    units = host.get_fact(VllmUnits)
    return any(units.get(r.unit_name) is None or units[r.unit_name].active != "active" for r in plan.replicas)


def headroom_verdicts(
    config: HostConfig, plan: ServingPlan, report: Any, every_replica: bool = False
) -> list[tuple[int, str, list[str]]]:
    """The core's headroom check for every replica: ``(replica, verdict, reasons)``; a replica's own memory
    (its unit and container) counts as available since it is freed when the replica is replaced
    (``every_replica``: a rollout's switch, the memory of every ms4fleet replica on the host)."""
    return [
        (replica.index, result.verdict, list(result.reasons))
        for replica, result in check_plan(report, config, plan, every_replica)
    ]


def _headroom_gate(state: Any, host: Any, config: HostConfig, plan: ServingPlan, sudo: bool) -> bool:
    probe = host.get_fact(Probe, _sudo=sudo)
    if probe.report is None:
        return fail(state, host, f"headroom: the probe failed: {probe.error}")
    verdicts = headroom_verdicts(config, plan, probe.report)
    blocked = [(index, reasons) for index, verdict, reasons in verdicts if verdict == "does-not-fit"]
    if blocked:
        details = "; ".join(f"replica {index}: {' '.join(reasons[-2:])}" for index, reasons in blocked)
        return fail(state, host, f"headroom: does-not-fit, nothing restarted: {details}")
    say(host, "headroom: " + ", ".join(f"replica {i} {v}" for i, v, _ in verdicts))
    return True


@operation(is_idempotent=False)
def headroom_gate(
    config: HostConfig, plan: ServingPlan, restarting: Callable[[], bool], sudo: bool
) -> Generator[Any, None, None]:
    """Fail this host (only) when a replica about to (re)start would not fit in the GPU memory free now."""
    if not (restarting() or _inactive(plan)):
        host.noop("no replica (re)starts: headroom gate not needed")
        return
    yield FunctionCommand(_headroom_gate, (config, plan, sudo), {})


def _health_gate(state: Any, host: Any, config: HostConfig, plan: ServingPlan, sudo: bool) -> bool:
    # Read now, not at prepare time: the driver may have been installed by this very deploy.
    _, output = host.run_shell_command(
        StringCommand("sh", "-c", shlex.quote(python_command("health.py"))),
        _sudo=sudo,
        print_output=False,
        print_input=False,
    )
    try:
        report = parse_health("\n".join(output.stdout_lines), host.name)
    except HealthError as err:
        return fail(state, host, f"GPU health gate: {err}")
    blocked = gate(report, config.gpu.count, {r.index: r.gpus for r in plan.replicas})
    if blocked:
        return fail(state, host, "GPU health gate: " + " | ".join(blocked))
    say(host, f"GPU health gate: replicas on GPUs {sorted(g for r in plan.replicas for g in r.gpus)} may serve")
    return True


@operation(is_idempotent=False)
def health_gate(
    config: HostConfig, plan: ServingPlan, restarting: Callable[[], bool], sudo: bool
) -> Generator[Any, None, None]:
    """Fail this host (only) when a replica about to (re)start would run on a GPU the core excludes now."""
    if not (restarting() or _inactive(plan)):
        host.noop("no replica (re)starts: GPU health gate not needed")
        return
    yield FunctionCommand(_health_gate, (config, plan, sudo), {})


def _read_host_secret(host: Any, config: HostConfig, sudo: bool) -> str | None:
    refs = service_secret_refs(config)
    if "VLLM_API_KEY" not in refs:
        return None
    name, ref = refs["VLLM_API_KEY"]
    # The controller's own value when it supplies one (the generated key, an environment variable).
    value = controller_value(ref) if ref.supplied else None
    if value:
        return value
    ok, output = host.run_shell_command(
        StringCommand("cat", secret_path(ref, name)), _sudo=sudo, print_output=False, print_input=False
    )
    return output.stdout.strip() if ok else None


def _verify_gate(
    state: Any, host: Any, config: HostConfig, plan: ServingPlan, checks: frozenset[str], timeout_s: float, sudo: bool
) -> bool:
    address = local_address(config)
    api_key = _read_host_secret(host, config, sudo)
    model = plan.served_model_name
    results = []
    for replica in plan.replicas:
        with forwarded(host, replica.internal_port, address) as url:
            report = verify(
                url,
                model,
                api_key=api_key,
                checks=checks,
                timeout_s=timeout_s,
                open_endpoint=config.serving.open_endpoint,
            )
        failed = [f"{c.name}: {c.detail}" for c in report.checks if c.status == "fail"]
        causes = [str(cause.to_dict().get("name", "")) for cause in report.causes]
        results.append({"replica": replica.index, "port": replica.port, "ok": report.ok, "failed": failed})
        if not report.ok:
            host.run_shell_command(StringCommand("rm", "-f", VERIFIED_FILE), _sudo=sudo)
            return fail(
                state,
                host,
                f"verify: replica {replica.index} (port {replica.port}) failed: {'; '.join(failed)}"
                + (f" (causes: {', '.join(causes)})" if causes else ""),
            )
    record = verified_record(model, sorted(checks), results)
    host.run_shell_command(StringCommand("sh", "-c", shlex.quote(record_command(record))), _sudo=sudo)
    say(host, f"verify: {len(results)} replica(s) passed {', '.join(sorted(checks))}")
    return True


@operation(is_idempotent=False)
def verify_gate(
    config: HostConfig,
    plan: ServingPlan,
    checks: frozenset[str],
    timeout_s: float,
    restarted: Callable[[], bool],
    sudo: bool,
) -> Generator[Any, None, None]:
    """Fail this host (only) unless every replica really serves (decode, tools, streaming, metrics, ...)."""
    if not (restarted() or host.get_fact(FileSha256, path=VERIFIED_FILE) is None):
        host.noop("nothing restarted and the last verification passed: not re-verified")
        return
    yield FunctionCommand(_verify_gate, (config, plan, checks, timeout_s, sudo), {})
