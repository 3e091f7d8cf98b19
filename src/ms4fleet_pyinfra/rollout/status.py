"""``ms4fleet status``: each host's current and previous release, whether it is the release the inventory
describes now, its replicas' health (systemd and GET /health through the SSH connection), their load (two
reads of /metrics, ``interval_s`` apart, parsed by ``ms4fleet.metrics``: running / waiting requests, KV cache
usage, counters and tokens/s from their delta), each GPU's memory (the probe) and health verdict
(``ms4fleet.health``), the core's GPU health gate (each GPU excluded now, and the replica its plan then
leaves out) and the sizing verdict of its plan.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx
from pyinfra.api.command import FunctionCommand
from pyinfra.api.operation import operation

from ms4fleet import metrics
from ms4fleet.config import HostConfig, internal_port
from ms4fleet.health import HealthError, HealthReport, exclusions, parse_health
from ms4fleet.hostplan import plan_for_data
from ms4fleet.hostscripts import python_command
from ms4fleet.imagepin import pin_configs
from ms4fleet.inventory import Fleet
from ms4fleet.rollout.release import release_for
from ms4fleet.serving import local_address, plan_host
from ms4fleet_pyinfra.facts import Probe
from ms4fleet_pyinfra.rollout.hostops import parse_read, read_script
from ms4fleet_pyinfra.rollout.session import run_state, shell, sudo_for
from ms4fleet_pyinfra.tunnel import forwarded


@dataclass
class HostStatus:
    host: str
    wanted: str
    verdict: str
    current: str | None = None
    previous: str | None = None
    units: dict[str, str] = field(default_factory=dict)
    health: dict[int, str] = field(default_factory=dict)
    # Per port: the second /metrics read (ReplicaLoad.to_dict) and tokens_per_s, or {"error": why}.
    load: dict[int, dict[str, Any]] = field(default_factory=dict)
    gpus: list[dict[str, Any]] = field(default_factory=list)
    # The GPU health gate: one line per GPU excluded now, and one per replica the plan then leaves out.
    gate: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def healthy(self) -> bool:
        return bool(self.health) and all(v == "ok" for v in self.health.values()) and not self.gate

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "current": self.current,
            "previous": self.previous,
            "wanted": self.wanted,
            "up_to_date": self.current == self.wanted,
            "units": self.units,
            "health": {str(port): state for port, state in self.health.items()},
            "load": {str(port): load for port, load in self.load.items()},
            "gpus": self.gpus,
            "gate": self.gate,
            "healthy": self.healthy,
            "verdict": self.verdict,
            "error": self.error,
        }


def _read_load(host: Any, address: str, port: int) -> metrics.ReplicaLoad | str:
    try:
        with forwarded(host, internal_port(port), address) as url:
            response = httpx.get(f"{url}/metrics", timeout=5.0)
        if response.status_code != 200:
            return f"GET /metrics: HTTP {response.status_code}"
        return metrics.ReplicaLoad.from_text(response.text)
    except metrics.MetricsError as exc:
        return str(exc)
    except (httpx.HTTPError, OSError) as exc:
        return f"unreachable ({type(exc).__name__})"


def _read_health(host: Any, sudo: bool) -> HealthReport | str:
    """The health reader's report (no DCGM diagnostic run), or why there is none."""
    ok, out, err = shell(host, python_command("health.py"), sudo)
    if not ok:
        return err.strip()[-200:] or "the health reader failed"
    try:
        return parse_health(out, host.name)
    except HealthError as exc:
        return str(exc)


def _gpus(host: Any, sudo: bool, report: HealthReport | str) -> tuple[list[dict[str, Any]], str]:
    """Each GPU's memory (the probe) and health verdict."""
    probe = host.get_fact(Probe, _sudo=sudo)
    if probe.report is None:
        return [], f"probe: {probe.error}"
    rows = {
        gpu.index: {
            "index": gpu.index,
            "memory_used_bytes": gpu.memory_used_bytes,
            "memory_total_bytes": gpu.memory_total_bytes,
            "health": None,
            "health_reason": "",
        }
        for gpu in probe.report.gpus
    }
    if isinstance(report, str):
        return [rows[i] for i in sorted(rows)], report
    for gpu in report.gpus:
        row = rows.setdefault(gpu.index, {"index": gpu.index, "memory_used_bytes": None, "memory_total_bytes": None})
        row["health"], row["health_reason"] = str(gpu.verdict), gpu.summary
    return [rows[i] for i in sorted(rows)], ""


def _gate(status: HostStatus, config: HostConfig, report: HealthReport | str) -> list[int]:
    """The core's GPU health gate on this host; the ports of the replicas its plan places now."""
    if isinstance(report, str):
        status.gate = [f"GPU health not read: {report}"]
        return [r.port for r in plan_host(config).replicas]
    excluded = exclusions(report, config.gpu.count)
    plan = plan_host(config, excluded=excluded)
    status.gate = [f"GPU {e.gpu} excluded: {e.reason}" for e in excluded] + [m.explanation for m in plan.missing]
    return [r.port for r in plan.replicas]


def _gather(state: Any, host: Any, status: HostStatus, config: HostConfig, sudo: bool, interval_s: float) -> bool:
    ok, out, err = shell(host, read_script(), sudo)
    if not ok:
        status.error = err.strip()[-200:] or "cannot read the host"
        return True
    report = _read_health(host, sudo)
    ports = _gate(status, config, report)
    address = local_address(config)
    facts = parse_read(host.name, out)
    status.current = facts.record.current.id if facts.record.current else None
    status.previous = facts.record.previous.id if facts.record.previous else None
    status.units = facts.units
    for port in ports:
        try:
            with forwarded(host, internal_port(port), address) as url:
                code = httpx.get(f"{url}/health", timeout=5.0).status_code
            status.health[port] = "ok" if code == 200 else f"HTTP {code}"
        except (httpx.HTTPError, OSError) as exc:
            status.health[port] = f"unreachable ({type(exc).__name__})"
    first = {port: (_read_load(host, address, port), time.monotonic()) for port in ports}
    if ports:
        time.sleep(interval_s)
    for port in ports:
        before, then = first[port]
        after = _read_load(host, address, port)
        if isinstance(after, str) or isinstance(before, str):
            status.load[port] = {"error": after if isinstance(after, str) else str(before)}
            continue
        rate = metrics.tokens_per_s(before, after, time.monotonic() - then)
        status.load[port] = {**after.to_dict(), "tokens_per_s": rate}
    status.gpus, why = _gpus(host, sudo, report)
    if why:
        status.error = f"GPUs: {why}"
    return True


@operation(is_idempotent=False)
def gather(status: HostStatus, config: HostConfig, sudo: bool, interval_s: float) -> Generator[Any, None, None]:
    yield FunctionCommand(_gather, (status, config, sudo, interval_s), {})


def fleet_status(fleet: Fleet, interval_s: float = 1.0) -> list[HostStatus]:
    rows = {}
    # The release a rollout would record: its image pinned to the digest the registry serves now.
    configs = pin_configs((spec.config, plan_for_data(spec.config, dict(spec.data)).image.id) for spec in fleet)
    for spec in fleet:
        plan = plan_host(configs[spec.name])
        rows[spec.name] = HostStatus(spec.name, release_for(configs[spec.name], plan).id, plan.verdict)
    result = run_state(
        list(fleet),
        lambda s: gather(status=rows[s.name], config=s.config, sudo=sudo_for(s), interval_s=interval_s, name="status"),
    )
    for name in result.unreachable:
        rows[name].error = "unreachable"
    return [rows[spec.name] for spec in fleet]
