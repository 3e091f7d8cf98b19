"""``ms4fleet health INVENTORY``: every GPU of every host judged healthy, degraded or unhealthy, with the
reason and the fix, read through the pyinfra engine's SSH connections (registered through the
``ms4fleet.commands`` entry point ``register_health``; the reader and the rules are the core's).

``--drain --lb-inventory FILE``: each replica on a GPU excluded now is taken out of service
(``ms4fleet_pyinfra.healthdrain``); ``--watch`` repeats the pass every ``--interval-s``.

Exit codes: 0 no GPU unhealthy and every host read (with ``--drain``: every replica on an excluded GPU is
out of service), 1 an unhealthy GPU, a host that could not be read, or a drain refused or failed, 2 bad
input (before any host is contacted).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from pyinfra.api.command import FunctionCommand
from pyinfra.api.operation import operation
from rich.console import Console
from rich.table import Table

from ms4fleet.config import ConfigError
from ms4fleet.health import Exclusion, HealthError, HealthReport, exclusions, parse_health
from ms4fleet.hostscripts import python_command
from ms4fleet.inventory import Fleet, HostSpec, load_inventory
from ms4fleet.serving import MissingReplica, plan_host
from ms4fleet_pyinfra.healthdrain import Drainer, DrainOutcome
from ms4fleet_pyinfra.rollout.lbctl import load_lb_inventory
from ms4fleet_pyinfra.rollout.session import run_state, shell, sudo_for


@dataclass
class HostHealth:
    host: str
    report: HealthReport | None = None
    error: str = ""
    # The core's exclusions and the replicas its plan then leaves out (``ms4fleet plan --health`` reads them).
    excluded: tuple[Exclusion, ...] = ()
    missing: tuple[MissingReplica, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "report": None if self.report is None else self.report.to_json(),
            "error": self.error,
            "excluded": [e.to_json() for e in self.excluded],
            "missing_replicas": [m.explanation for m in self.missing],
        }

    def place(self, spec: HostSpec) -> None:
        if self.report is not None:
            self.excluded = exclusions(self.report, spec.config.gpu.count)
            self.missing = plan_host(spec.config, excluded=self.excluded).missing


def register_health(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "health",
        help="every GPU's health: healthy, degraded (warned) or unhealthy (excluded), with reason and fix",
    )
    parser.add_argument("inventory", help="pyinfra .py or Ansible .yml inventory")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument(
        "--watch-s", type=float, default=0.0, help="also watch NVML Xid events and PCIe replays this long"
    )
    parser.add_argument(
        "--dcgm-level", type=int, choices=(0, 1, 2, 3), default=1, help="dcgmi diag run level where DCGM is installed"
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="take each replica on a GPU excluded now out of the load balancer and stop it",
    )
    parser.add_argument("--lb-inventory", help="pyinfra inventory of the nginx load balancer host(s) (with --drain)")
    parser.add_argument("--watch", action="store_true", help="with --drain: repeat every --interval-s until stopped")
    parser.add_argument("--interval-s", type=float, default=30.0, help="seconds between passes of --watch")
    parser.add_argument(
        "--drain-timeout-s", type=float, default=300.0, help="how long a drained replica may finish its requests"
    )
    parser.set_defaults(func=run_health)


def _read(state: Any, host: Any, row: HostHealth, args: tuple[str, ...], sudo: bool) -> bool:
    ok, out, err = shell(host, python_command("health.py", *args), sudo)
    if not ok:
        row.error = err.strip()[-200:] or "the health reader failed"
        return True
    try:
        row.report = parse_health(out, host.name)
    except HealthError as exc:
        row.error = str(exc)
    return True


@operation(is_idempotent=False)
def read_health(row: HostHealth, args: tuple[str, ...], sudo: bool) -> Generator[Any, None, None]:
    yield FunctionCommand(_read, (row, args, sudo), {})


def fleet_health(fleet: Fleet, watch_s: float = 0.0, dcgm_level: int = 1) -> list[HostHealth]:
    rows = {spec.name: HostHealth(spec.name) for spec in fleet}
    args = ("--watch-s", str(watch_s), "--dcgm-level", str(dcgm_level))
    result = run_state(list(fleet), lambda s: read_health(row=rows[s.name], args=args, sudo=sudo_for(s), name="health"))
    for name in result.unreachable:
        rows[name].error = "unreachable"
    for spec in fleet:
        rows[spec.name].place(spec)
    return [rows[spec.name] for spec in fleet]


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_drain(args: argparse.Namespace) -> int:
    if not args.lb_inventory:
        print("ms4fleet: error: --drain needs --lb-inventory FILE (the load balancer to drain from)", file=sys.stderr)
        return 2
    if args.interval_s <= 0 or args.drain_timeout_s <= 0:
        print("ms4fleet: error: --interval-s and --drain-timeout-s must be > 0", file=sys.stderr)
        return 2
    try:
        fleet = load_inventory(args.inventory)
        drainer = Drainer(fleet, load_lb_inventory(args.lb_inventory), timeout_s=args.drain_timeout_s)
    except ConfigError as err:
        print(f"ms4fleet: error: {err}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        while True:
            rows = fleet_health(fleet, max(0.0, float(args.watch_s)), args.dcgm_level)
            outcome = drainer.run({row.host: row.report for row in rows})
            unread = [f"{row.host}: health not read: {row.error}" for row in rows if row.report is None]
            code = 0 if outcome.ok and not unread else 1
            _print_drain(args, rows, outcome, unread)
            if not args.watch:
                return code
            time.sleep(args.interval_s)
    except KeyboardInterrupt:
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_drain(args: argparse.Namespace, rows: list[HostHealth], outcome: DrainOutcome, unread: list[str]) -> None:
    if args.json:
        doc = {"health": [row.to_dict() for row in rows], "drain": outcome.to_json(), "unread": unread}
        # One object per line with --watch, so a log or a pipe can read pass by pass.
        sys.stdout.write(json.dumps(doc, indent=None if args.watch else 2) + "\n")
    else:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) if args.watch else ""
        lines = [*outcome.lines(), *unread]
        if not lines and not args.watch:
            out = len(outcome.already_out)
            lines = [f"nothing to drain: no serving replica is on an excluded GPU ({out} out of service already)"]
        for line in lines:
            print(stamp + line)
    sys.stdout.flush()


def run_health(args: argparse.Namespace) -> int:
    if args.drain:
        return run_drain(args)
    if args.watch or args.lb_inventory:
        print("ms4fleet: error: --watch and --lb-inventory go with --drain", file=sys.stderr)
        return 2
    rows = fleet_health(load_inventory(args.inventory), max(0.0, float(args.watch_s)), args.dcgm_level)
    if args.json:
        sys.stdout.write(json.dumps([row.to_dict() for row in rows], indent=2) + "\n")
    else:
        table = Table("host", "GPU", "verdict", "why", "fix")
        for row in rows:
            if row.report is None:
                table.add_row(row.host, "-", "[red]unread[/red]", row.error, "")
                continue
            for gpu in row.report.gpus:
                fixes = "; ".join(dict.fromkeys(f.fix for f in gpu.findings if f.verdict == gpu.verdict))
                colour = ("green", "yellow", "red")[gpu.verdict]
                table.add_row(row.host, str(gpu.index), f"[{colour}]{gpu.verdict}[/{colour}]", gpu.summary, fixes)
        console = Console()
        console.print(table)
        for row in rows:
            for missing in row.missing:
                console.print(f"{row.host}: {missing.explanation}", markup=False, highlight=False, soft_wrap=True)
    bad = any(row.report is None or row.report.excluded for row in rows)
    return 1 if bad else 0
