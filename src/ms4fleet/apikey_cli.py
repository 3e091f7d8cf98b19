"""``ms4fleet api-key INVENTORY``: print the API key ms4fleet generated for the inventory's hosts (made now
if there is none yet), to stdout and nowhere else; ``--path`` prints where it lives instead. Exit 1 when no
selected host uses the generated key (each references its own, or is open), naming them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ms4fleet import apikey
from ms4fleet.cli import UsageError, existing_file
from ms4fleet.inventory import load_inventory
from ms4fleet.secrets import api_key_summary


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "api-key",
        help="print the API key ms4fleet generated for an inventory's endpoints",
        description=__doc__,
    )
    parser.add_argument("inventory", type=existing_file, help="pyinfra .py or Ansible .yml inventory")
    parser.add_argument("--limit", action="append", help="host or group (repeatable)")
    parser.add_argument("--path", action="store_true", help="print the key file's path, not the key")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fleet = load_inventory(args.inventory).select(args.limit)
    summaries = {host.name: api_key_summary(host.config) for host in fleet}
    if not any(s["source"] == "generated" for s in summaries.values()):
        others = "; ".join(f"{name}: {s['source']}" for name, s in summaries.items())
        print(
            f"ms4fleet api-key: no host uses the generated key ({others}): "
            "a host with serving.api_key reads its own, an open one has none",
            file=sys.stderr,
        )
        return 1
    try:
        path = apikey.ensure_key()
        print(path if args.path else apikey.read_key(path))
    except apikey.ApiKeyError as err:
        raise UsageError(str(err)) from None
    return 0
