"""pyinfra ``.py`` inventories read by pyinfra itself (``pyinfra_cli``'s own file loader), so ``group_data/``
and its precedence are exactly what ``pyinfra INVENTORY deploy.py`` (and ``pyinfra INVENTORY
debug-inventory``) sees, run from the same directory. Registered as the ``py`` loader of the entry-point group
``ms4fleet.inventory_loaders``; the core never imports this module by name.

Importing ``pyinfra_cli`` monkey-patches the whole process with gevent, which the caller (a CLI that may run
threads) must not get: the loader runs in a child Python and hands back JSON.

+ ``read_hosts(path)``: e.g. ``read_hosts(Path("inventory/example.py"))`` -> ``[(name, groups, data), ...]``.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ms4fleet.config import ConfigError

RawHost = tuple[str, tuple[str, ...], dict[str, Any]]


def read_hosts(source: Path) -> list[RawHost]:
    """Every host of a pyinfra inventory, its groups (without the file's own group) and its merged data."""
    done = subprocess.run(
        [sys.executable, "-m", __name__, str(source), os.getcwd()], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(str(source), "", f"cannot be read by pyinfra: {last}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    if "error" in answer:
        raise ConfigError(*answer["error"])
    return [(name, tuple(groups), data) for name, groups, data in answer["hosts"]]


def _dump(source: Path, cwd: str) -> dict[str, Any]:
    """Runs in the child: pyinfra's loader, then every host as JSON (or the first problem)."""
    try:
        namespace = runpy.run_path(str(source))
    except Exception as err:
        return {"error": [str(source), "", f"fails to import: {type(err).__name__}: {err}"]}
    duplicate = _first_duplicate(namespace)
    if duplicate:
        return {"error": list(duplicate)}
    from pyinfra.api.state import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory_from_files

    try:
        with ctx_state.use(State(check_for_changes=False)):
            inventory = make_inventory_from_files(str(source), cwd=cwd)
    except Exception as err:
        return {"error": [str(source), "", f"cannot be read by pyinfra: {type(err).__name__}: {err}"]}
    file_group = source.name.rsplit(".", 1)[0]
    hosts = [[host.name, [g for g in host.groups if g != file_group], host.data.dict()] for host in inventory]
    return {"hosts": json.loads(json.dumps(hosts, default=str))}


def _first_duplicate(namespace: dict[str, Any]) -> tuple[str, str, str] | None:
    """pyinfra silently merges a host listed twice in one group; flag that as the mistake it is."""
    for group, value in namespace.items():
        hosts = value[0] if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict) else value
        if group.startswith("_") or not isinstance(hosts, list):
            continue
        counts = Counter(h[0] if isinstance(h, tuple) else h for h in hosts if isinstance(h, (str, tuple)))
        dupes = sorted(name for name, seen in counts.items() if seen > 1)
        if dupes:
            return dupes[0], "inventory", f"is listed twice in group {group!r}: list each host once"
    return None


if __name__ == "__main__":
    print(json.dumps(_dump(Path(sys.argv[1]), sys.argv[2])))
