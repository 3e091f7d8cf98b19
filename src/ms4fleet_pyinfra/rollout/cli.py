"""``ms4fleet rollout`` and ``ms4fleet status`` on the pyinfra engine, registered through the
``ms4fleet.commands`` entry points (``register_rollout``, ``register_status``) so the core CLI never imports
an engine. Options and their checks are the core's (``ms4fleet.rollout.cli``).

A rollout holds the fleet's lock on the controller and journals every step
(``ms4fleet.rollout.journal``); SIGINT / SIGTERM write the report and leave the fleet resumable (exit 130).

Exit codes: 0 every host at the release (or already there), 1 the rollout stopped (a host failed
verification and was rolled back, or could not be reached; or the controller lacks a program it runs), 2 bad
input, before any host is contacted, or a policy the fleet's real state cannot honour (hosts already out of
the load balancer or failing verification leave too few serving), refused before anything stops.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ms4fleet.config import ConfigError
from ms4fleet.controller import deploy_uses, require_controller
from ms4fleet.inventory import load_inventory
from ms4fleet.progress import LINE_EVERY_S
from ms4fleet.rollout.cli import add_rollout_arguments, add_status_arguments, policy_from_args
from ms4fleet.rollout.hoststate import HostRun, Phase
from ms4fleet.rollout.journal import JOURNAL_NAME, FleetLock, Journal, LockedError, fleet_dir, summary, unfinished
from ms4fleet.rollout.live import RolloutBoard, board_view
from ms4fleet.rollout.report import ReportWriter
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
    parser = subparsers.add_parser(
        "status",
        help="each host's release, its replicas' health and load (requests, KV cache, tokens/s), GPU memory and health",
    )
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
        except PolicyError as err:
            print(f"ms4fleet: error: {err}", file=sys.stderr)
            return 2
        sys.stdout.write(json.dumps(plan.to_dict(), indent=2) + "\n")
        return 0
    directory = fleet_dir(rollout.specs)
    lock = FleetLock(directory)
    try:
        lock.acquire()
    except LockedError as err:
        print(f"ms4fleet: error: {err}", file=sys.stderr)
        return 2
    try:
        return _locked_rollout(args, rollout, Journal(directory / JOURNAL_NAME), console, bool(lb_hosts))
    finally:
        lock.release()


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _locked_rollout(args: argparse.Namespace, rollout: Any, journal: Journal, console: Console, lb: bool) -> int:
    from ms4fleet_pyinfra.rollout.driver import INTERRUPTED

    earlier = unfinished(journal.read())
    if args.resume:
        if not earlier:
            print(f"ms4fleet: error: --resume: no unfinished rollout of this fleet in {journal.path}", file=sys.stderr)
            return 2
        wanted = earlier[-1][0].get("targets", {})
        moved = sorted(name for name, release in rollout.targets.items() if wanted.get(name) != release.id)
        if moved:
            print(
                f"ms4fleet: error: --resume: the inventory now describes another release for {', '.join(moved)} "
                "than the interrupted rollout: run without --resume to roll out the new one",
                file=sys.stderr,
            )
            return 2
        rollout.resume, rollout.earlier = True, [summary(run) for run in earlier]
    rollout.journal = journal
    if not lb:
        console.print("[yellow]no --lb-inventory: replicas are not drained from a load balancer[/yellow]")
    # The report follows the rollout from its plan on (a rollout refused while reading the fleet writes none):
    # rewritten after every host's step, so a controller killed mid-rollout leaves its report as of its last
    # step (an interrupted one writes it again below).
    writer = ReportWriter(args.report_dir, lambda: None if rollout.plan is None else rollout.report())
    rollout.tracker.listeners.append(writer)
    board = RolloutBoard(rollout.tracker.runs, lambda: rollout.plan, rollout.tracker.now)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with board_view(console, board):
            report = rollout.run()
    except PolicyError as err:
        # Refused after reading the fleet, before anything stopped: one line, as for bad options.
        print(f"ms4fleet: error: refused, nothing was changed: {err}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
        writer.close()
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
    return 130 if report.stopped == INTERRUPTED else report.exit_code


def _gib(value: int | None) -> str:
    return "?" if value is None else f"{value / (1 << 30):.1f}"


def status_table(rows: list[Any]) -> Table:
    """One line per replica (release, health, load) and one per GPU (memory, health) under its host."""
    table = Table("host", "release", "replica", "health", "running", "waiting", "KV cache", "tokens/s", "GPUs")
    for row in rows:
        wanted = "" if row.current == row.wanted else f" (wants {row.wanted})"
        gpus = ", ".join(
            f"{g['index']}: {_gib(g['memory_used_bytes'])}/{_gib(g['memory_total_bytes'])} GiB {g['health'] or '?'}"
            for g in row.gpus
        )
        release = f"{row.current or 'none'}{wanted}"
        if row.error or not row.health:
            table.add_row(row.host, release, "-", row.error or "no replica planned", "", "", "", "", gpus)
            continue
        for index, (port, health) in enumerate(row.health.items()):
            load = row.load.get(port, {})
            if "running" in load:
                cells = [f"{load['running']:g}", f"{load['waiting']:g}", f"{load['kv_cache_usage']:.1%}"]
                cells.append(f"{load['tokens_per_s']:.1f}")
            else:
                cells = [load.get("error", ""), "", "", ""]
            first = index == 0
            table.add_row(row.host if first else "", release if first else "", str(port), health, *cells,
                          gpus if first else "")  # fmt: skip
    return table


def status_lines(rows: list[Any]) -> list[str]:
    """The table's content as plain lines for a log: one per replica (or per host without one)."""
    lines = []
    for row in rows:
        release = row.current or "none"
        if row.current != row.wanted:
            release += f" (wants {row.wanted})"
        if row.error or not row.health:
            lines.append(f"{row.host}: {release}: {row.error or 'no replica planned'}")
            continue
        for port, health in row.health.items():
            load = row.load.get(port, {})
            if "running" in load:
                figures = (
                    f"running {load['running']:g}, waiting {load['waiting']:g}, KV {load['kv_cache_usage']:.1%}, "
                    f"{load['tokens_per_s']:.1f} tokens/s"
                )
            else:
                figures = load.get("error", "")
            lines.append(f"{row.host} {port}: {release}: {health}; {figures}")
    return lines


def watch_status(read: Any, console: Console, pause_s: float, sleep: Any = None) -> int:
    """Read and show the fleet until Ctrl-C: the table redrawn in place on a terminal, else a timestamped
    block of ``status_lines`` per pass, ``pause_s`` apart (a log gets a reading, not a flood)."""
    sleep = sleep or time.sleep
    try:
        if console.is_terminal:
            with Live(Table(), console=console, auto_refresh=False) as live:
                while True:
                    live.update(status_table(read()), refresh=True)
                    sleep(pause_s)
        while True:
            rows = read()
            console.print(f"status at {time.strftime('%H:%M:%S')}", markup=False, highlight=False)
            for line in status_lines(rows):
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
            sleep(pause_s)
    except KeyboardInterrupt:
        return 0


def run_status(args: argparse.Namespace) -> int:
    from ms4fleet_pyinfra.rollout.status import fleet_status

    fleet = load_inventory(args.inventory)
    if args.watch and not args.json:
        console = Console()
        # Each pass takes --interval-s already (two /metrics reads); a log waits for the periodic line's pace.
        pause = 0.0 if console.is_terminal else max(LINE_EVERY_S - args.interval_s, 0.0)
        return watch_status(lambda: fleet_status(fleet, args.interval_s), console, pause)
    rows = fleet_status(fleet, args.interval_s)
    if args.json:
        sys.stdout.write(json.dumps([row.to_dict() for row in rows], indent=2) + "\n")
    else:
        Console().print(status_table(rows))
    return 0 if all(row.healthy and not row.error for row in rows) else 1
