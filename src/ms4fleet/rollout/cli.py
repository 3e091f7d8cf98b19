"""The rollout and status command lines, shared by every engine that drives a rollout.

The core cannot run a rollout itself (that takes an engine's connection to the hosts), so the engine's
command registers its subparser with ``add_rollout_arguments`` / ``add_status_arguments`` and turns the
parsed options into a ``Policy`` with ``policy_from_args``; bad values fail with one line before any
host is contacted.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ms4fleet.rollout.report import HTML_NAME, JSON_NAME
from ms4fleet.rollout.waves import Policy, WaveSize

DEFAULT_REPORT_DIR = Path("rollout-report")
# The options' defaults: the core's policy (the Ansible playbook's too).
DEFAULT_POLICY = Policy()
WAVE_DEFAULT = str(DEFAULT_POLICY.wave).replace("%", "%%")


def _whole_number(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    return number


def _report_dir(value: str) -> Path:
    """A directory the report can be written to, checked before the rollout changes any host."""
    path = Path(value)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{value}: {existing} is not writable")
    reports = (path / JSON_NAME, path / HTML_NAME)
    unwritable = [p for p in reports if p.exists() and not (p.is_file() and os.access(p, os.W_OK))]
    if unwritable:
        raise argparse.ArgumentTypeError(f"{value}: {unwritable[0]} is not writable")
    return path


def add_rollout_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inventory", help="pyinfra inventory (.py) of the GPU hosts")
    parser.add_argument(
        "--canary",
        type=_whole_number,
        default=DEFAULT_POLICY.canary,
        metavar="N",
        help=f"hosts changed first, alone (default {DEFAULT_POLICY.canary})",
    )
    parser.add_argument(
        "--wave",
        default=str(DEFAULT_POLICY.wave),
        metavar="SIZE",
        # argparse formats help with %: a share's sign is doubled.
        help=f"hosts per wave after the canary: a count or a share (default {WAVE_DEFAULT})",
    )
    parser.add_argument(
        "--max-unavailable",
        type=_whole_number,
        default=DEFAULT_POLICY.max_unavailable,
        metavar="K",
        help=f"hosts out of the load balancer at once (default {DEFAULT_POLICY.max_unavailable})",
    )
    parser.add_argument(
        "--lb-inventory",
        metavar="FILE",
        help="pyinfra inventory of the nginx load balancer host(s) to drain and rejoin replicas on",
    )
    parser.add_argument(
        "--report-dir",
        type=_report_dir,
        default=str(DEFAULT_REPORT_DIR),
        metavar="D",
        help=f"where rollout.json and rollout.html go (default {DEFAULT_REPORT_DIR})",
    )
    parser.add_argument("--dry", action="store_true", help="print the waves and stop")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue this fleet's interrupted rollout (killed, Ctrl-C, stopped) from the hosts' real state; "
        "the report covers every run of it",
    )


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inventory", help="pyinfra inventory (.py) of the GPU hosts")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--watch", action="store_true", help="redraw the table until interrupted (Ctrl-C)")
    parser.add_argument(
        "--interval-s",
        type=_positive_seconds,
        default=1.0,
        metavar="S",
        help="seconds between the two /metrics reads that give tokens/s (default 1)",
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in (0, 3600]")
    return value


def policy_from_args(args: argparse.Namespace) -> Policy:
    return Policy(canary=args.canary, wave=WaveSize.parse(args.wave), max_unavailable=args.max_unavailable)
