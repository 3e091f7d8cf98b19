"""``nvidia-ctk`` of the simulated container toolkit: ``runtime configure`` edits daemon.json like the real one.

The real command loads the engine's JSON config, sets ``runtimes.nvidia = {"args": [], "path":
"nvidia-container-runtime"}`` (and ``default-runtime`` with ``--set-as-default``), keeps every other key,
and writes the file back with sorted keys and four-space indentation (Go's json.MarshalIndent).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

VERSION = "1.18.0"
RUNTIME_PATH = "nvidia-container-runtime"
DEFAULT_CONFIGS = {"docker": "/etc/docker/daemon.json"}


def _log(level: str, message: str) -> None:
    sys.stderr.write(f"{level}[0000] {message}\n")


def configure(args: argparse.Namespace) -> int:
    if args.runtime not in DEFAULT_CONFIGS:
        _log("ERRO", f"unrecognized runtime '{args.runtime}' (the simulated toolkit supports docker)")
        return 1
    path = Path(args.config or DEFAULT_CONFIGS[args.runtime])
    _log("INFO", f"Loading config from {path}")
    config: dict[str, Any] = {}
    if path.exists() and path.read_text(encoding="utf-8").strip():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            _log("ERRO", f"unable to load config: {exc}")
            return 1
    runtimes = config.setdefault("runtimes", {})
    runtimes[args.nvidia_runtime_name] = {"args": [], "path": args.nvidia_runtime_path}
    if args.set_as_default:
        config["default-runtime"] = args.nvidia_runtime_name
    rendered = json.dumps(config, indent=4, sort_keys=True) + "\n"
    if args.dry_run:
        sys.stdout.write(rendered)
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendered, encoding="utf-8")
    _log("INFO", f"Wrote updated config to {path}")
    _log("INFO", "It is recommended that docker daemon be restarted.")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvidia-ctk")
    parser.add_argument("-v", "--version", action="store_true")
    sub = parser.add_subparsers(dest="command")
    runtime = sub.add_parser("runtime")
    runtime_sub = runtime.add_subparsers(dest="action")
    conf = runtime_sub.add_parser("configure")
    conf.add_argument("--runtime", default="docker")
    conf.add_argument("--config")
    conf.add_argument("--set-as-default", action="store_true")
    conf.add_argument("--dry-run", action="store_true")
    conf.add_argument("--nvidia-runtime-name", default="nvidia")
    conf.add_argument("--nvidia-runtime-path", "--runtime-path", default=RUNTIME_PATH)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        print(f"NVIDIA Container Toolkit CLI version {VERSION}\ncommit: ms4fleet-sim")
        return 0
    if args.command == "runtime" and args.action == "configure":
        return configure(args)
    _parser().print_help(sys.stderr)
    return 1
