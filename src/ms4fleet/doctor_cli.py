"""``ms4fleet doctor``: the controller checks both engines run before touching any host, as a table or JSON.

Exit 0 when every check passes, 1 otherwise (each failure is also printed as the one line a deploy stops with).
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from ms4fleet.cli import print_json
from ms4fleet.controller import controller_checks


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = subparsers.add_parser(
        "doctor",
        help="check this controller: the programs, versions and Python packages the toolkit runs",
        description="Check everything both engines need on this machine (they run the same checks before "
        "touching any host). Exit 0 when all pass, 1 otherwise.",
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    checks = controller_checks()
    ok = all(check.ok for check in checks)
    if args.json:
        print_json({"ok": ok, "checks": [check.to_dict() for check in checks]})
        return 0 if ok else 1
    probe = Console()
    console = probe if probe.is_terminal else Console(width=max(probe.width, 120))
    table = Table(title="ms4fleet doctor: this controller", title_justify="left")
    for column in ("check", "needed for", "wants", "found"):
        table.add_column(column, overflow="fold")
    table.add_column("result", no_wrap=True)
    for check in checks:
        result = "[green]ok[/green]" if check.ok else "[red]FAIL[/red]"
        table.add_row(check.name, check.needed_for, check.wants, check.found or "-", result)
    console.print(table)
    # The fix of each failure as the exact line a deploy would stop with (plain: rich would wrap it).
    for check in checks:
        if not check.ok:
            print(f"ms4fleet: {check.line()}", file=sys.stderr)
    return 0 if ok else 1
