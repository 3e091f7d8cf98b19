"""The ``ms4fleet`` command: plan and size in the core; other subcommands register themselves.

Exit codes: 0 done, 1 a check or verdict failed (where the command says so, and a controller requirement
not met), 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn

from ms4fleet import __version__
from ms4fleet.config import ConfigError
from ms4fleet.controller import ControllerError

# Core subcommands and the module that registers each (``register(subparsers)``). Only the module of the
# command being run is imported: start-up time is paid per command, not for all of them.
_CORE_COMMANDS = {
    "api-key": "ms4fleet.apikey_cli",
    "doctor": "ms4fleet.doctor_cli",
    "plan": "ms4fleet.plan_cli",
    "size": "ms4fleet.plan_cli",
    "verify": "ms4fleet.verify_cli",
    "weights": "ms4fleet.weights.cli",
}


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage before its error: bad input gets one line here, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with a known ``command``, only the module registering it is imported (start-up time)."""
    parser = _OneLineParser(
        prog="ms4fleet",
        description="Turn NVIDIA GPU hosts into a fleet serving Mistral Small 4 on vLLM.",
    )
    parser.add_argument("--version", action="version", version=f"ms4fleet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    extensions = {entry.name: entry for entry in entry_points(group="ms4fleet.commands")}
    # An unknown or absent command gets every subcommand, so help and "did you mean" list them all.
    wanted = command if command in _CORE_COMMANDS or command in extensions else None
    for module in sorted({m for name, m in _CORE_COMMANDS.items() if wanted in (None, name)}):
        importlib.import_module(module).register(subparsers)
    # Extensions outside the core (the simulation) plug in here without the core importing them.
    for name, entry in extensions.items():
        if wanted not in (None, name):
            continue
        try:
            register = entry.load()
        except ImportError:
            continue  # an extension whose package is absent from this install
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(words)
    try:
        result: int = args.func(args)
    except (ConfigError, UsageError) as err:
        print(f"ms4fleet: error: {err}", file=sys.stderr)
        return 2
    except ControllerError as err:
        # The same line as the engines' preflight (`ms4fleet: controller: ...`).
        print(f"ms4fleet: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


def print_json(data: Any) -> None:
    """Indented for a person at a terminal; compact (and several times faster to encode) for programs."""
    indent = 2 if sys.stdout.isatty() else None
    # json.dumps, unlike json.dump, uses the C encoder.
    sys.stdout.write(json.dumps(data, indent=indent) + "\n")


def existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path


if __name__ == "__main__":
    raise SystemExit(main())
