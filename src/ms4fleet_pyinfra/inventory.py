"""pyinfra ``.py`` inventories read by pyinfra itself (``pyinfra_cli``'s own file loader), so ``group_data/``
and its precedence are exactly what ``pyinfra INVENTORY deploy.py`` (and ``pyinfra INVENTORY
debug-inventory``) sees, run from the same directory. Registered as the ``py`` loader of the entry-point group
``ms4fleet.inventory_loaders``; the core never imports this module by name.

Importing ``pyinfra_cli`` monkey-patches the whole process with gevent, which the caller (a CLI that may run
threads) must not get; and an inventory is a program that may exit, raise, print or never finish. So the loader
runs it in a child Python with a time limit, which writes its answer (hosts, or one problem) to a file.

+ ``read_hosts(path)``: e.g. ``read_hosts(Path("inventory/example.py"))`` -> ``[RawHost, ...]``.
+ ``raw_hosts(inventory)``: the hosts of an inventory pyinfra has already loaded (the deploy's preflight).
+ ``side_hosts(path)``: the hosts of a load balancer or monitoring inventory (no GPU, no ms4fleet config).
"""

from __future__ import annotations

import difflib
import json
import os
import runpy
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ms4fleet.config import KEY_PREFIX, ConfigError
from ms4fleet.inventory import GroupSettings, RawHost, read_text

# Reading an inventory is local work: one that takes longer is waiting on something it should not.
LOAD_TIMEOUT_S = float(os.environ.get("MS4FLEET_INVENTORY_TIMEOUT_S", "30"))
# pyinfra's "all" data sits below every group; groups have no order a reader can see (file order decides).
_ALL_RANK = (0,)
_GROUP_RANK = (1,)
# Keys the core reads as values (its settings and the connection): Python objects there are refused, not str()-ed.
_CONNECTION = ("ssh_hostname", "ssh_port", "ssh_user", "ssh_key")


def read_hosts(source: Path) -> list[RawHost]:
    """Every host of a pyinfra inventory, its groups (without the file's own group) and its merged data."""
    read_text(source)
    with tempfile.TemporaryDirectory(prefix="ms4fleet-inventory-") as scratch:
        answer_file = Path(scratch) / "answer.json"
        try:
            done = subprocess.run(
                [sys.executable, "-m", __name__, str(source), os.getcwd(), str(answer_file)],
                capture_output=True,
                text=True,
                errors="replace",
                check=False,
                stdin=subprocess.DEVNULL,
                timeout=LOAD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(
                str(source),
                "",
                f"did not finish loading in {LOAD_TIMEOUT_S:g}s: an inventory must not wait on anything",
            ) from None
        try:
            answer = json.loads(answer_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            last = (done.stderr.strip().splitlines() or [f"it exited with status {done.returncode}, no answer"])[-1]
            raise ConfigError(str(source), "", f"cannot be read by pyinfra: {last}") from None
    if "error" in answer:
        raise ConfigError(*answer["error"])
    return [
        RawHost(
            name=host["name"],
            groups=tuple(host["groups"]),
            data=host["data"],
            group_settings=tuple(GroupSettings(g, tuple(rank), data) for g, rank, data in host["group_settings"]),
            own_keys=frozenset(host["own_keys"]),
        )
        for host in answer["hosts"]
    ]


def raw_hosts(inventory: Iterable[Any], file_group: str | None = None) -> list[RawHost]:
    """The hosts of a loaded pyinfra ``Inventory``: merged data plus each group's own, in pyinfra's precedence."""
    hosts = []
    for host in inventory:
        state = host.inventory
        own = {**state.get_override_data(), **state.get_host_data(host.name)}
        layers = [GroupSettings("all", _ALL_RANK, _settings(state.get_data()))]
        layers += [GroupSettings(g, _GROUP_RANK, _settings(state.get_group_data(g))) for g in host.groups]
        hosts.append(
            RawHost(
                name=host.name,
                groups=tuple(g for g in host.groups if g != file_group),
                data=_plain(host.name, dict(host.data.dict())),
                group_settings=tuple(layers),
                own_keys=frozenset(k for k in own if k.startswith(KEY_PREFIX)),
            )
        )
    return hosts


def side_hosts(path: str) -> dict[str, dict[str, Any]]:
    """Hosts of a small pyinfra inventory file for hosts that serve nothing (load balancers, monitoring): each
    top-level list (or ``(hosts, group_data)`` pair) in file order, its group data merged under the host's own."""
    try:
        module = runpy.run_path(path)
    except Exception as err:
        raise ConfigError(path, "", f"fails to import: {type(err).__name__}: {err}") from None
    hosts: dict[str, dict[str, Any]] = {}
    for name, value in module.items():
        if name.startswith("_"):
            continue
        entries, shared = value if isinstance(value, tuple) and len(value) == 2 else (value, {})
        if not isinstance(entries, list) or not isinstance(shared, dict):
            continue
        for entry in entries:
            host, own = entry if isinstance(entry, tuple) else (entry, {})
            if isinstance(host, str) and isinstance(own, dict):
                hosts.setdefault(host, {}).update({**shared, **own})
    return hosts


def _settings(data: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(data).items() if str(k).startswith(KEY_PREFIX)}


def _plain(host: str, data: dict[str, Any]) -> dict[str, Any]:
    """JSON data; the keys the core reads must already be JSON (a set or an object there is a mistake)."""
    for key, value in data.items():
        if str(key).startswith(KEY_PREFIX) or key in _CONNECTION:
            problem = _not_json(value)
            if problem:
                raise ConfigError(host, str(key), f"holds {problem}: use dicts, lists, strings, numbers and booleans")
    plain: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return plain


def _not_json(value: Any) -> str | None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return None
    if isinstance(value, (list, tuple)):
        return next((p for p in map(_not_json, value) if p), None)
    if isinstance(value, dict):
        bad_key = next((k for k in value if not isinstance(k, str)), None)
        if bad_key is not None:
            return f"a {type(bad_key).__name__} key {bad_key!r}"
        return next((p for p in map(_not_json, value.values()) if p), None)
    return f"a Python {type(value).__name__}"


def _dump(source: Path, cwd: str) -> dict[str, Any]:
    """Runs in the child: pyinfra's loader, then every host as JSON (or the first problem)."""
    try:
        namespace = runpy.run_path(str(source))
    except BaseException as err:  # an inventory that exits or is interrupted is refused like one that raises
        return {"error": [str(source), "", f"fails to import: {type(err).__name__}: {_one_line(err)}"]}
    problem = _first_odd_shape(namespace) or _first_duplicate(namespace)
    if problem:
        return {"error": list(problem)}
    from pyinfra.api.state import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory_from_files

    try:
        with ctx_state.use(State(check_for_changes=False)):
            inventory = make_inventory_from_files(str(source), cwd=cwd)
            hosts = raw_hosts(inventory, file_group=source.name.rsplit(".", 1)[0])
        orphan = _orphan_group_data(inventory, namespace, source)
        if orphan:
            return {"error": list(orphan)}
    except ConfigError as err:
        return {"error": _parts(err)}
    except BaseException as err:
        what = "" if hasattr(err, "exception") else f"{type(err).__name__}: "
        return {"error": [str(source), "", f"cannot be read by pyinfra: {what}{_one_line(err)}"]}
    return {
        "hosts": [
            {
                "name": h.name,
                "groups": list(h.groups),
                "data": dict(h.data),
                "group_settings": [[g.name, list(g.rank), _plain(h.name, dict(g.data))] for g in h.group_settings],
                "own_keys": sorted(h.own_keys),
            }
            for h in hosts
        ]
    }


def _orphan_group_data(inventory: Any, namespace: dict[str, Any], source: Path) -> tuple[str, str, str] | None:
    """A ``group_data/`` file for a group the inventory does not have: pyinfra makes it an empty group, so its
    settings silently reach no host (``group_data/gpu.py`` beside a group ``gpus``)."""
    groups = {name for name, _ in _groups(namespace)} | {"all", source.name.rsplit(".", 1)[0]}
    for name, data in inventory.group_data.items():
        if name not in groups and data and not inventory.groups.get(name):
            close = difflib.get_close_matches(name, sorted(groups), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            return f"group_data/{name}.py", "", f"names no group of {source.name}, so its data reaches no host{hint}"
    return None


def _parts(err: ConfigError) -> list[str]:
    """host, field, message: what ``ConfigError`` was made of, to make it again in the parent."""
    head = f"{err.host}: {err.field}" if err.field else f"{err.host}:"
    return [err.host, err.field, str(err)[len(head) :].lstrip(" ")]


def _one_line(err: BaseException) -> str:
    # pyinfra wraps an error in a group_data file as UnexpectedExternalError(exception, filename).
    inner, filename = getattr(err, "exception", None), getattr(err, "filename", None)
    if isinstance(inner, BaseException) and filename:
        return f"{filename}: {type(inner).__name__}: {_one_line(inner)}"
    try:
        text = str(err)
    except Exception:  # an exception whose __str__ fails still gets its type named
        text = ""
    return " ".join(text.split()) or "(no message)"


def _groups(namespace: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    """The module-level names pyinfra reads as groups: lists and tuples not starting with ``_``."""
    return ((k, v) for k, v in namespace.items() if not k.startswith("_") and isinstance(v, (list, tuple)))


def _first_odd_shape(namespace: dict[str, Any]) -> tuple[str, str, str] | None:
    """pyinfra skips a group it cannot read with a warning: a host would silently drop out of the run."""
    for group, value in _groups(namespace):
        hosts = value
        if isinstance(value, tuple):
            if len(value) != 2 or not isinstance(value[0], list) or not isinstance(value[1], dict):
                return group, "inventory", "is a tuple but not (hosts list, data dict)"
            hosts = value[0]
        for item in hosts:
            if isinstance(item, str):
                continue
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                return group, "inventory", f"holds {_short(item)}: a host is a name or a (name, data dict) tuple"
            if not isinstance(item[1], dict):
                return item[0], "inventory", f"data in group {group!r} is {_short(item[1])}, not a dict"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _first_duplicate(namespace: dict[str, Any]) -> tuple[str, str, str] | None:
    """pyinfra silently merges a host listed twice in one group; flag that as the mistake it is."""
    for group, value in _groups(namespace):
        hosts = value[0] if isinstance(value, tuple) else value
        counts = Counter(h[0] if isinstance(h, tuple) else h for h in hosts)
        dupes = sorted(name for name, seen in counts.items() if seen > 1)
        if dupes:
            return dupes[0], "inventory", f"is listed twice in group {group!r}: list each host once"
    return None


if __name__ == "__main__":
    _answer = _dump(Path(sys.argv[1]), sys.argv[2])
    Path(sys.argv[3]).write_text(json.dumps(_answer), encoding="utf-8")
    # Whatever the inventory left running (threads, child processes) must not keep the loader alive.
    os._exit(0)
