"""``ms4fleet status``: each host's current and previous release, whether it is the release the inventory
describes now, its replicas' health (systemd and GET /health through the SSH connection), the sizing
verdict of its plan and the core's GPU health gate (each GPU excluded now, and the replica left out for it).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx
from pyinfra.api.command import FunctionCommand
from pyinfra.api.operation import operation

from ms4fleet.config import HostConfig
from ms4fleet.health import HealthError, exclusions, parse_health
from ms4fleet.hostscripts import python_command
from ms4fleet.inventory import Fleet
from ms4fleet.rollout.release import release_for
from ms4fleet.serving import plan_host
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
    # The GPU health gate: one line per GPU excluded now (with the replica the plan then leaves out).
    gpus: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def healthy(self) -> bool:
        return bool(self.health) and all(v == "ok" for v in self.health.values()) and not self.gpus

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "current": self.current,
            "previous": self.previous,
            "wanted": self.wanted,
            "up_to_date": self.current == self.wanted,
            "units": self.units,
            "health": {str(port): state for port, state in self.health.items()},
            "gpus": self.gpus,
            "healthy": self.healthy,
            "verdict": self.verdict,
            "error": self.error,
        }


def _gpu_gate(host: Any, status: HostStatus, config: HostConfig, sudo: bool) -> list[int]:
    """The core's GPU health gate on this host; the ports of the replicas its plan places now."""
    ok, out, err = shell(host, python_command("health.py"), sudo)
    try:
        report = parse_health(out, host.name) if ok else None
    except HealthError as exc:
        status.gpus.append(str(exc))
        report = None
    if report is None:
        status.gpus = status.gpus or [f"GPU health not read: {err.strip()[-200:]}"]
        return [r.port for r in plan_host(config).replicas]
    excluded = exclusions(report, config.gpu.count)
    plan = plan_host(config, excluded=excluded)
    status.gpus = [f"GPU {e.gpu} excluded: {e.reason}" for e in excluded]
    status.gpus += [m.explanation for m in plan.missing]
    return [r.port for r in plan.replicas]


def _gather(state: Any, host: Any, status: HostStatus, config: HostConfig, sudo: bool) -> bool:
    ok, out, err = shell(host, read_script(), sudo)
    if not ok:
        status.error = err.strip()[-200:] or "cannot read the host"
        return True
    ports = _gpu_gate(host, status, config, sudo)
    facts = parse_read(host.name, out)
    status.current = facts.record.current.id if facts.record.current else None
    status.previous = facts.record.previous.id if facts.record.previous else None
    status.units = facts.units
    for port in ports:
        try:
            with forwarded(host, port) as url:
                code = httpx.get(f"{url}/health", timeout=5.0).status_code
            status.health[port] = "ok" if code == 200 else f"HTTP {code}"
        except (httpx.HTTPError, OSError) as exc:
            status.health[port] = f"unreachable ({type(exc).__name__})"
    return True


@operation(is_idempotent=False)
def gather(status: HostStatus, config: HostConfig, sudo: bool) -> Generator[Any, None, None]:
    yield FunctionCommand(_gather, (status, config, sudo), {})


def fleet_status(fleet: Fleet) -> list[HostStatus]:
    rows = {}
    for spec in fleet:
        plan = plan_host(spec.config)
        rows[spec.name] = HostStatus(spec.name, release_for(spec.config, plan).id, plan.verdict)
    result = run_state(
        list(fleet),
        lambda s: gather(status=rows[s.name], config=s.config, sudo=sudo_for(s), name="status"),
    )
    for name in result.unreachable:
        rows[name].error = "unreachable"
    return [rows[spec.name] for spec in fleet]
