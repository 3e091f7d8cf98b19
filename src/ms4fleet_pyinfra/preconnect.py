"""The whole inventory validated before pyinfra connects to any host.

pyinfra connects to every host (``connect_all``) before it loads a deploy file, so a check inside ``deploy()``
comes after SSH. pyinfra runs ``config.py`` from the directory it runs in before it reads the inventory, inside
its click command: the repository's ``config.py`` calls ``validate_before_connect``, which reads the command's
own parameters, and when they run ms4fleet's deploy over an inventory file, validates that file with the core
(``ms4fleet.inventory.load_inventory``: pyinfra's loader, every host, the fleet-wide rules, weights and
secret environment variables required).
A problem ends the run with one line and exit status 2 before pyinfra has read the inventory, let alone
connected. ``deploy()`` validates again on what pyinfra loaded (``--data`` overrides included). A valid
inventory's run also loads the early check reads (``ms4fleet_pyinfra.earlyread``) before pyinfra connects.

+ ``validate_before_connect(deploy_file)``: the check above; a no-op outside the pyinfra command line and for
  commands that do not run ms4fleet's deploy (facts, ``exec``, other deploys), which still get the core's
  host-key checking (``ms4fleet_pyinfra.hostkeys``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from ms4fleet.config import ConfigError
from ms4fleet.inventory import load_inventory
from ms4fleet_pyinfra.hostkeys import enforce as enforce_host_keys

# The deploy as a module (`ms4fleet_pyinfra.deploy`) and as the checkout's file (`deploy.py`).
_DEPLOY_MODULES = ("ms4fleet_pyinfra.deploy", "ms4fleet_pyinfra.deploys.fleet.deploy")


def runs_ms4fleet_deploy(operations: Sequence[str], deploy_file: Path) -> bool:
    """Whether pyinfra's operations are ms4fleet's deploy (the module, or ``deploy_file``)."""
    return any(
        word in _DEPLOY_MODULES or (word.endswith(".py") and Path(word).resolve() == deploy_file.resolve())
        for word in operations
    )


def validate_before_connect(deploy_file: Path) -> None:
    context = click.get_current_context(silent=True)
    if context is None:
        return
    # Every command run from the checkout (facts and exec too) checks host keys as the core decides.
    enforce_host_keys()
    inventory = str(context.params.get("inventory") or "")
    if not (inventory.endswith(".py") and runs_ms4fleet_deploy(context.params.get("operations") or (), deploy_file)):
        return
    try:
        load_inventory(inventory, deploying=True)
    except ConfigError as err:
        sys.stderr.write(f"ms4fleet: error: {err}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
    # Loaded now, before pyinfra connects: deploy.py then sends each host its first check read as soon as
    # pyinfra has connected, without the core's import in between (ms4fleet_pyinfra.earlyread).
    importlib.import_module("ms4fleet_pyinfra.earlyread")
