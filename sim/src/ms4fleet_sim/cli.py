"""``ms4fleet sim ...``: bring a simulated GPU fleet up, inspect it, load the stand-in image, tear it down.

The core CLI finds this through the ``ms4fleet.commands`` entry point (``register``); ``python -m
ms4fleet_sim`` runs the same commands without the core CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ms4fleet_sim import dockercli, faults, fleet, inventories, standin_image
from ms4fleet_sim.profiles import assign_specs, parse_gpu_spec

Handler = Callable[[argparse.Namespace], int]


def project_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` holding pyproject.toml or .git (else ``start``)."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").exists() or (candidate / ".git").exists():
            return candidate
    return here


def _fleet(args: argparse.Namespace) -> fleet.Fleet:
    return fleet.Fleet(root=Path(args.root).resolve() if args.root else project_root(), name=args.fleet)


def _err(message: str) -> int:
    print(f"ms4fleet sim: {message}", file=sys.stderr)
    return 2


def cmd_up(args: argparse.Namespace) -> int:
    try:
        specs = assign_specs([parse_gpu_spec(s) for s in (args.gpus or ["h200x8"])], args.hosts)
    except ValueError as exc:
        return _err(str(exc))
    target = _fleet(args)
    started = time.monotonic()
    record = fleet.up(target, specs, log=lambda line: print(line, file=sys.stderr))
    py_path, yml_path = inventories.write(target, record)
    if args.standin:
        standin_image.ensure_image(log=lambda line: print(line, file=sys.stderr))
    for host in record.hosts:
        print(f"{host.name}\t127.0.0.1:{host.ssh_port}\t{host.gpu_kind} x{host.gpu_count}")
    print(f"inventories: {py_path} {yml_path}")
    print(f"up in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    rows = fleet.status(_fleet(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"fleet {args.fleet!r}: nothing is up")
        return 0
    columns = ("name", "role", "state", "endpoint", "gpus", "systemd")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    target = _fleet(args)
    removed = fleet.down(None if args.all else target)
    inventories.remove(target)
    if args.all:
        for record in target.sim_dir.glob("*/fleet.json"):
            record.unlink()
    print(
        f"removed {removed['containers']} container(s), {removed['networks']} network(s), "
        f"{removed['volumes']} volume(s)"
    )
    return 0


def cmd_load_image(args: argparse.Namespace) -> int:
    target = _fleet(args)
    record = target.load()
    if record is None:
        return _err(f"fleet {args.fleet!r} is not up: run `ms4fleet sim up` first")
    names = args.host or [h.name for h in record.hosts]
    unknown = sorted(set(names) - {h.name for h in record.hosts})
    if unknown:
        return _err(f"--host {', '.join(unknown)}: not in fleet {args.fleet!r}")
    tag = standin_image.ensure_image(log=lambda line: print(line, file=sys.stderr))
    for name in names:
        standin_image.load_into(target.container(name), tag)
        print(f"{name}: loaded {tag}")
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    target = _fleet(args)
    try:
        switches = faults.parse_assignments(args.set or [])
    except ValueError as exc:
        return _err(str(exc))
    faults.write(target.container(args.host), {} if args.clear else switches)
    print(f"{args.host}: faults {json.dumps({} if args.clear else switches)}")
    return 0


def cmd_key_fingerprint(args: argparse.Namespace) -> int:
    from ms4fleet_sim import signing

    print(signing.fingerprint())
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from ms4fleet_sim import aptrepo, hostimage

    log: list[str] = []
    image = hostimage.ensure_host_image(log)
    repo = aptrepo.ensure_repo(image, log)
    standin = standin_image.ensure_image(log=log.append)
    for line in log:
        print(line, file=sys.stderr)
    print(f"host image {image}\nrepository {repo}\nstand-in image {standin}")
    return 0


def _with_errors(handler: Handler) -> Handler:
    """Turn expected failures (Docker, builds, timeouts) into a one-line error and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (dockercli.DockerError, RuntimeError, TimeoutError, OSError) as exc:
            print(f"ms4fleet sim: {exc}", file=sys.stderr)
            return 1

    return run


def add_commands(sim: argparse.ArgumentParser) -> None:
    """Add the sim subcommands to ``sim`` (the ``ms4fleet sim`` parser or the standalone one)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--fleet", default=fleet.DEFAULT_FLEET, help="fleet name (default: %(default)s)")
    common.add_argument("--root", help="project directory holding .sim/ and inventory/ (default: the repo root)")
    sub = sim.add_subparsers(dest="sim_command", metavar="COMMAND", required=True)

    up = sub.add_parser("up", parents=[common], help="build (cached) images and start a fleet")
    up.add_argument("--hosts", type=int, default=1, help="number of hosts (default: %(default)s)")
    up.add_argument(
        "--gpus",
        action="append",
        metavar="KIND[xN]",
        help="GPUs per host, e.g. h200x8, h100-nvl:2, b200; repeat to deal kinds round-robin over the hosts "
        "(default: h200x8)",
    )
    up.add_argument("--standin", action="store_true", help="also build the vLLM stand-in image now")
    up.set_defaults(func=_with_errors(cmd_up))

    status = sub.add_parser("status", parents=[common], help="show the fleet's containers")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_with_errors(cmd_status))

    down = sub.add_parser("down", parents=[common], help="remove the fleet's containers, network and volumes")
    down.add_argument("--all", action="store_true", help="remove every sim fleet on this machine")
    down.set_defaults(func=_with_errors(cmd_down))

    load = sub.add_parser("load-image", parents=[common], help="load the vLLM stand-in image into hosts' Docker")
    load.add_argument("--host", action="append", help="host name (repeatable; default: every host)")
    load.set_defaults(func=_with_errors(cmd_load_image))

    fault = sub.add_parser("fault", parents=[common], help="set the stand-in's fault switches on a host")
    fault.add_argument("--host", required=True)
    fault.add_argument("--set", action="append", metavar="KEY=VALUE", help="a switch (JSON value or string)")
    fault.add_argument("--clear", action="store_true", help="remove every switch")
    fault.set_defaults(func=_with_errors(cmd_fault))

    build = sub.add_parser("build", parents=[common], help="build the cached images and apt repository only")
    build.set_defaults(func=_with_errors(cmd_build))

    key = sub.add_parser(
        "key-fingerprint", help="the fingerprint of the sim apt archive key (what inventories pin as key_fingerprint)"
    )
    key.set_defaults(func=_with_errors(cmd_key_fingerprint))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Entry point of group ``ms4fleet.commands``: add ``sim`` to the core CLI."""
    sim = subparsers.add_parser("sim", help="a simulated GPU fleet in Docker (hosts, NVIDIA stack, vLLM stand-in)")
    add_commands(sim)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ms4fleet_sim", description=__doc__)
    add_commands(parser)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
