"""``ms4fleet rollout`` and ``ms4fleet status`` on the pyinfra engine, registered through the
``ms4fleet.commands`` entry points (``register_rollout``, ``register_status``) so the core CLI never imports
an engine. Options and their checks are the core's (``ms4fleet.rollout.cli``).

Exit codes: 0 every host at the release (or already there), 1 the rollout stopped (a host failed
verification and was rolled back, or could not be reached; or the controller lacks a program it runs), 2 bad
input, before any host is contacted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from ms4fleet.config import ConfigError
from ms4fleet.controller import deploy_uses, require_controller
from ms4fleet.inventory import load_inventory
from ms4fleet.rollout.cli import add_rollout_arguments, add_status_arguments, policy_from_args
from ms4fleet.rollout.hoststate import HostRun, Phase
from ms4fleet.rollout.waves import PolicyError, plan_waves
from ms4fleet.weights.stage import is_local

_COLOURS = {
    Phase.REJOINED: "green",
    Phase.UNCHANGED: "green",
    Phase.VERIFIED: "green",
    Phase.ROLLING_BACK: "yellow",
    Phase.ROLLED_BACK: "red",
    Phase.FAILED: "red",
    Phase.UNREACHABLE: "red",
}


def register_rollout(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rollout",
        help="change a serving fleet wave by wave: canary, verification gates, automatic rollback",
        description="Roll the release the inventory describes out to its hosts: the canary first, then waves; "
        "each host is drained from the load balancer, switched, verified and rejoined, or rolled back.",
    )
    add_rollout_arguments(parser)
    parser.set_defaults(func=run_rollout)


def register_status(subparsers: Any) -> None:
    parser = subparsers.add_parser("status", help="each host's current release, health and verdict")
    add_status_arguments(parser)
    parser.set_defaults(func=run_status)


def _progress(console: Console) -> Any:
    def show(run: HostRun, phase: Phase) -> None:
        colour = _COLOURS.get(phase, "cyan")
        at = run.history[-1][1]
        detail = f" [dim]{run.detail}[/dim]" if phase in {Phase.ROLLING_BACK, Phase.FAILED, Phase.UNREACHABLE} else ""
        console.print(f"[dim]{at:7.1f}s[/dim] {run.name:<20} [{colour}]{phase}[/{colour}]{detail}")

    return show


def run_rollout(args: argparse.Namespace) -> int:
    from ms4fleet_pyinfra.rollout.driver import Rollout, Stop
    from ms4fleet_pyinfra.rollout.lbctl import load_lb_inventory

    console = Console(stderr=True)
    try:
        policy = policy_from_args(args)
        fleet = load_inventory(args.inventory, deploying=True)
        # Options that no fleet of this size can honour fail here, before any connection.
        plan_waves([h.name for h in fleet], set(), policy)
        lb_hosts = load_lb_inventory(args.lb_inventory) if args.lb_inventory else []
        rollout = Rollout(fleet, policy, lb_hosts, listeners=[_progress(console)])
    except (PolicyError, ConfigError) as err:
        # One plain line (rich would wrap it at the terminal's width).
        print(f"ms4fleet: error: {err}", file=sys.stderr)
        return 2
    # The controller's preflight, as deploy.py runs it: a failure reaches the CLI as one line (exit 1).
    remote = any(not is_local(spec.name, spec.data) for spec in fleet)
    require_controller(deploy_uses("pyinfra", weights=True, remote=remote), ["pyinfra"])
    if args.dry:
        console.print("dry run: reading each host's release to plan the waves; nothing is changed")
        try:
            plan = rollout.read()
        except Stop as stop:
            print(f"ms4fleet: {stop}", file=sys.stderr)
            return 1
        sys.stdout.write(json.dumps(plan.to_dict(), indent=2) + "\n")
        return 0
    if not lb_hosts:
        console.print("[yellow]no --lb-inventory: replicas are not drained from a load balancer[/yellow]")
    report = rollout.run()
    try:
        json_path, html_path = report.write(args.report_dir)
    except OSError as err:
        # Checked before the rollout; a directory that changed since still gets one line, not a traceback.
        print(f"ms4fleet: error: rollout {report.outcome}, but its report cannot be written: {err}", file=sys.stderr)
        return report.exit_code or 1
    style = "green" if report.exit_code == 0 else "red"
    console.print(f"[{style}]rollout {report.outcome}[/{style}] in {report.duration_s:.1f}s")
    if report.stopped:
        console.print(f"stopped: {report.stopped}", markup=False, highlight=False)
    for cause in report.causes():
        console.print(f"cause on {cause['host']}: {cause['id']}: {cause['title']}", markup=False, highlight=False)
    console.print(f"report: {json_path} and {html_path}")
    return report.exit_code


def run_status(args: argparse.Namespace) -> int:
    from ms4fleet_pyinfra.rollout.status import fleet_status

    fleet = load_inventory(args.inventory)
    rows = fleet_status(fleet)
    if args.json:
        sys.stdout.write(json.dumps([row.to_dict() for row in rows], indent=2) + "\n")
    else:
        table = Table("host", "release", "previous", "inventory wants", "replicas", "health", "GPUs", "verdict")
        for row in rows:
            active = sum(1 for state in row.units.values() if state == "active")
            replicas_ok = all(v == "ok" for v in row.health.values()) and bool(row.health)
            health = row.error or ("ok" if replicas_ok else ", ".join(f"{p}: {s}" for p, s in row.health.items()))
            wanted = "same" if row.current == row.wanted else row.wanted
            table.add_row(
                row.host,
                row.current or "none",
                row.previous or "none",
                wanted,
                f"{active}/{len(row.units)} active",
                health,
                "; ".join(row.gpus) or "ok",
                row.verdict,
            )
        Console().print(table)
    return 0 if all(row.healthy and not row.error for row in rows) else 1
