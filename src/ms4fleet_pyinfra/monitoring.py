"""``ms4fleet monitoring INVENTORY --monitoring-inventory FILE``: the core's monitoring plan
(``ms4fleet.monitoring``) applied over the pyinfra API on each monitoring host: Debian's prometheus installed
with apt, the plan's files written (only those that differ), the config checked with promtool, and Prometheus
started or reloaded when a file changed. Registered through the ``ms4fleet.commands`` entry points.

Exit codes: 0 every monitoring host applied, 1 a host failed, 2 bad input (before any host is contacted).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

from pyinfra.api.command import FunctionCommand
from pyinfra.api.operation import operation

from ms4fleet import monitoring
from ms4fleet.config import ConfigError
from ms4fleet.inventory import load_inventory
from ms4fleet.serving import plan_host
from ms4fleet_pyinfra.inventory import side_hosts
from ms4fleet_pyinfra.rollout.session import run_state, shell, sudo_for

_INSTALL = (
    "if ! dpkg-query -W -f '${{Status}}' {packages} 2>/dev/null | grep -q 'install ok installed'; then "
    "DEBIAN_FRONTEND=noninteractive apt-get update -qq && "
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {packages} >/dev/null; fi"
)
# Write PATH from stdin when its bytes differ; say so.
_WRITE = (
    'set -e; p={path}; mkdir -p "$(dirname "$p")"; cat > "$p.new"; '
    'if [ -f "$p" ] && cmp -s "$p" "$p.new"; then rm -f "$p.new"; else chmod 0644 "$p.new"; mv "$p.new" "$p"; '
    "echo changed; fi"
)
_START = (
    "set -e; promtool check config {config} >/dev/null; systemctl enable --quiet {service}; "
    "if [ {changed} = 1 ] || ! systemctl is-active --quiet {service}; then systemctl reload-or-restart {service}; fi"
)


@dataclass(frozen=True)
class MonitoringHost:
    """A monitoring host from its own pyinfra inventory (no GPU, so no ms4fleet serving config)."""

    name: str
    data: Mapping[str, Any]


def load_monitoring_inventory(path: str) -> dict[str, MonitoringHost]:
    """Hosts of a pyinfra inventory file, with group data merged (host data wins)."""
    hosts = side_hosts(path)
    return {name: MonitoringHost(name, data) for name, data in hosts.items()}


def _apply(state: Any, host: Any, plan: monitoring.MonitoringPlan, sudo: bool, errors: dict[str, str]) -> bool:
    packages = " ".join(shlex.quote(p) for p in plan.packages)
    ok, _, err = shell(host, _INSTALL.format(packages=packages), sudo)
    if not ok:
        errors[host.name] = f"apt-get install {packages}: {err.strip()[-300:]}"
        return False
    changed = False
    for path, data in sorted(plan.files.items()):
        ok, out, err = shell(host, _WRITE.format(path=shlex.quote(path)), sudo, stdin=data.decode())
        if not ok:
            errors[host.name] = f"writing {path}: {err.strip()[-200:]}"
            return False
        changed = changed or "changed" in out
    script = _START.format(
        config=shlex.quote(monitoring.CONFIG_PATH), service=shlex.quote(plan.service), changed=int(changed)
    )
    ok, _, err = shell(host, script, sudo)
    if not ok:
        errors[host.name] = f"prometheus refused its config or did not start: {err.strip()[-300:]}"
        return False
    return True


@operation(is_idempotent=False)
def prometheus(plan: monitoring.MonitoringPlan, sudo: bool, errors: dict[str, str]) -> Generator[Any, None, None]:
    yield FunctionCommand(_apply, (plan, sudo, errors), {})


Plans = dict[str, monitoring.MonitoringPlan]


def plans_for(inventory: str, monitoring_inventory: str) -> tuple[Plans, list[MonitoringHost]]:
    """The core's plans and the hosts they go to; ``ConfigError`` (one line) for a host named but not defined."""
    fleet = load_inventory(inventory)
    specs = list(fleet)
    plans = monitoring.fleet_monitoring(specs, {spec.name: plan_host(spec.config) for spec in specs})
    if not plans:
        raise ConfigError(inventory, "monitoring", "is set on no host: set ms4fleet_monitoring.prometheus_host")
    hosts = load_monitoring_inventory(monitoring_inventory)
    for name in plans:
        if name not in hosts:
            first = next(s.name for s in specs if s.config.monitoring and s.config.monitoring.prometheus_host == name)
            raise ConfigError(
                first,
                "monitoring.prometheus_host",
                f"={name!r} is not a host of {monitoring_inventory}: add it there or name one of {sorted(hosts)}",
            )
    return plans, [hosts[name] for name in plans]


def register_monitoring(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "monitoring", help="install Prometheus on the monitoring host(s): targets, rules and alerts from the plan"
    )
    parser.add_argument("inventory", help="inventory of the GPU hosts (ms4fleet_monitoring names the monitoring host)")
    parser.add_argument("--monitoring-inventory", required=True, metavar="FILE", help="pyinfra inventory of it")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON and touch nothing")
    parser.set_defaults(func=run_monitoring)


def run_monitoring(args: argparse.Namespace) -> int:
    try:
        plans, hosts = plans_for(args.inventory, args.monitoring_inventory)
    except ConfigError as err:
        print(f"ms4fleet: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(json.dumps([plan.to_json() for plan in plans.values()], indent=2) + "\n")
        return 0
    errors: dict[str, str] = {}
    result = run_state(
        hosts, lambda h: prometheus(plan=plans[h.name], sudo=sudo_for(h), errors=errors, name="prometheus")
    )
    for name in result.unreachable:
        errors.setdefault(name, "unreachable")
    for name in result.failed:
        errors.setdefault(name, "failed")
    for name, why in sorted(errors.items()):
        print(f"ms4fleet: {name}: {why}", file=sys.stderr)
    for name, plan in plans.items():
        if name not in errors:
            print(f"{name}: prometheus on :{plan.port} scrapes {len(plan.scraped)} hosts ({', '.join(plan.scraped)})")
    return 1 if errors else 0
