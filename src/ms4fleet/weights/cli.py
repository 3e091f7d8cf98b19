"""``ms4fleet weights fetch|verify|stage``: ``register(subparsers)`` adds them to the ms4fleet CLI.

Exit codes: 0 done / verified, 1 a fetch, a verification or a host failed, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from ms4fleet.paths import WEIGHTS_ROOT
from ms4fleet.weights.stage import BWLIMIT, DEFAULT_STAGING


def _handler(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        result: int = getattr(importlib.import_module("ms4fleet.weights.commands"), name)(args)
        return result

    return run


def _bwlimit(text: str) -> str:
    if not BWLIMIT.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate rsync reads (e.g. 200M, 1.5G, 51200 KiB/s)")
    return text


def _token_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-file", help="file holding the Hub READ token (mode 0600)")
    parser.add_argument("--token-env", help="name of the environment variable holding the Hub READ token")
    parser.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or https://huggingface.co)")


def register(subparsers: Any) -> None:
    weights = subparsers.add_parser("weights", help="fetch, verify and stage model weights", description=__doc__)
    sub = weights.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    fetch = sub.add_parser("fetch", help="fetch a profile's weights at a pinned revision into a directory")
    fetch.add_argument("--inventory", help="take everything from this inventory's --host config")
    fetch.add_argument("--host", help="the inventory host whose weights config to use")
    fetch.add_argument("--profile", help="catalog model profile, e.g. mistral-small-4-fp8")
    fetch.add_argument("--revision", help="40-character commit hash to pin")
    fetch.add_argument("--dest", help=f"weights directory (default {WEIGHTS_ROOT}/<repo>/<revision>)")
    fetch.add_argument("--source", choices=("hub", "mirror", "path"), default="hub")
    fetch.add_argument("--mirror-url", help="mirror base URL (source mirror)")
    fetch.add_argument("--manifest-sha256", help="sha256 the mirror's manifest must have (source mirror)")
    fetch.add_argument("--allow-insecure", action="store_true", help="accept an http:// mirror (source mirror)")
    fetch.add_argument("--path", help="directory or NFS mount holding a weights directory (source path)")
    fetch.add_argument("--owner", help="USER[:GROUP] owning the finished directory (root:root on ms4fleet hosts)")
    fetch.add_argument("--full", action="store_true", help="hash every file already present")
    fetch.add_argument("--workers", type=int, default=4, help="files fetched in parallel (default 4)")
    fetch.add_argument("--json", action="store_true", help="print the result as JSON")
    _token_options(fetch)
    fetch.set_defaults(func=_handler("fetch"))

    verify = sub.add_parser("verify", help="verify a weights directory against its manifest")
    verify.add_argument("dir")
    verify.add_argument("--full", action="store_true", help="hash every file, ignoring the stat stamp")
    verify.add_argument("--repo", help="fail unless the directory holds this repo")
    verify.add_argument("--revision", help="fail unless the directory holds this revision")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=_handler("verify"))

    stage = sub.add_parser("stage", help="fetch once, copy to every host over SSH, verify on each host")
    stage.add_argument("inventory", help="pyinfra .py or Ansible .yml inventory")
    stage.add_argument("--limit", nargs="*", help="host or group names (default: all hosts)")
    stage.add_argument("--staging-dir", default=str(DEFAULT_STAGING), help=f"default {DEFAULT_STAGING}")
    stage.add_argument("--parallel", type=int, default=8, help="hosts copied to at once (default 8)")
    stage.add_argument(
        "--bwlimit", type=_bwlimit, help="cap each host's copy, in rsync's syntax (e.g. 200M per second); default none"
    )
    stage.add_argument(
        "--peers",
        action="store_true",
        help="hosts feed each other (weights.peer_fanout / peer_seeds / peer_address / peer_port): the source "
        "sends the revision about once",
    )
    stage.add_argument(
        "--source-address",
        help="with --peers and a hub or path source: the controller's address on the staging network, where it "
        "serves its copy to the first hosts",
    )
    _token_options(stage)
    stage.set_defaults(func=_handler("stage"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run as ``python -m ms4fleet.weights.cli ...`` (same commands as ``ms4fleet weights ...``)."""
    parser = argparse.ArgumentParser(prog="ms4fleet")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
