"""Ansible YAML inventories read by Ansible itself: ``InventoryManager`` + ``VariableManager``, so
``group_vars/``, ``host_vars/``, children, ranges and their precedence are exactly what ``ansible-playbook``
(and ``ansible-inventory --host``) sees. Registered as the ``yml``/``yaml`` loader of the entry-point group
``ms4fleet.inventory_loaders``; the core never imports this module by name.

Every problem is one ``ConfigError`` line: a YAML syntax error as ``file:line:col``, an unreadable or
non-UTF-8 file, and a source no inventory plugin could parse (Ansible would warn and go on with fewer hosts).

+ ``read_hosts(path)``: e.g. ``read_hosts(Path("inventory/example.yml"))`` -> ``[RawHost, ...]`` with every
  variable Ansible gives the host (its own wrapped strings made plain) and each group's own settings.
+ ``group_settings(inventory, loader, host)``: what each group of a host says on its own, ranked by Ansible's
  precedence (depth, then ``ansible_group_priority``), and the keys the host sets itself.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.utils.vars import combine_vars
from ansible.vars.manager import VariableManager
from ansible.vars.plugins import get_vars_from_inventory_sources

from ansible import constants as C
from ms4fleet.config import KEY_PREFIX, ConfigError
from ms4fleet.inventory import GroupSettings, RawHost, read_text


def read_hosts(source: Path) -> list[RawHost]:
    """Every host of a YAML inventory, its groups (without ``all``/``ungrouped``) and its variables."""
    _check_yaml(source)
    for path in _vars_files(source):
        _check_yaml(path)
    # A source no plugin parses is an error, not a warning followed by a run on the hosts that did parse.
    C.INVENTORY_UNPARSED_IS_FAILED = True
    C.INVENTORY_ANY_UNPARSED_IS_FAILED = True
    loader = DataLoader()
    try:
        inventory = _parse(loader, source)
        variables = VariableManager(loader=loader, inventory=inventory)
        hosts: list[RawHost] = []
        for host in inventory.get_hosts():
            # What `ansible-inventory --host` prints: every stage of vars plugins, Ansible's internal vars left out.
            data = variables.get_vars(host=host, include_hostvars=False, stage="all")
            groups = tuple(g.name for g in host.get_groups() if g.name not in {"all", "ungrouped"})
            settings, own = group_settings(inventory, loader, host)
            hosts.append(RawHost(host.name, groups, _plain(data), settings, own))
    except AnsibleError as err:
        raise ConfigError(str(source), "", f"cannot be read by Ansible: {_first_line(err)}") from None
    _check_vars_dirs(source, inventory)
    return hosts


def _parse(loader: DataLoader, source: Path) -> InventoryManager:
    """Ansible's InventoryManager; when no plugin parses the file, the one line says why the YAML plugin did
    not (Ansible prints every plugin's failure over many lines, then a line that names none of them)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            inventory = InventoryManager(loader=loader, sources=[str(source)])
    except AnsibleError as err:
        why = re.search(r"Failed to parse inventory with 'yaml' plugin: (.*)", captured.getvalue())
        raise ConfigError(
            str(source), "", f"cannot be read by Ansible: {why.group(1).strip() if why else _first_line(err)}"
        ) from None
    sys.stderr.write(captured.getvalue())  # Ansible's warnings about a source it did read stay visible
    return inventory


def group_settings(inventory: Any, loader: Any, host: Any) -> tuple[tuple[GroupSettings, ...], frozenset[str]]:
    """Each group's own ``ms4fleet_*`` variables for ``host`` (inventory file and ``group_vars/``), ranked as
    Ansible merges them, and the ``ms4fleet_*`` keys the host sets itself (inline or ``host_vars/``)."""
    # The sources VariableManager hands its vars plugins, absolute: a relative "inventory.yml" has no directory
    # for them to find group_vars/ in.
    sources = [os.path.abspath(s) if os.path.exists(s) else s for s in inventory._sources]
    layers = []
    for group in host.get_groups():
        data = combine_vars(group.get_vars(), get_vars_from_inventory_sources(loader, sources, [group], "all"))
        settings = {k: v for k, v in _plain(data).items() if k.startswith(KEY_PREFIX)}
        layers.append(GroupSettings(group.name, (group.depth, group.priority), settings))
    own = combine_vars(host.get_vars(), get_vars_from_inventory_sources(loader, sources, [host], "all"))
    return tuple(layers), frozenset(k for k in own if str(k).startswith(KEY_PREFIX))


# Where Ansible looks for variable files beside an inventory file, and the extensions it reads there.
_VARS_DIRS = ("group_vars", "host_vars")
_VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")


def _vars_files(source: Path) -> list[Path]:
    """The files of ``group_vars/`` and ``host_vars/`` beside the inventory; a link to nothing is an error
    (Ansible skips it without a word, and the hosts lose its settings)."""
    files = []
    for name in _VARS_DIRS:
        base = source.parent / name
        for path in sorted(base.rglob("*")) if base.is_dir() else []:
            if path.is_symlink() and not path.exists():
                raise ConfigError(str(path), "", f"is a link to {path.readlink()}, which does not exist")
            if path.is_file() and path.suffix in _VARS_SUFFIXES and not path.name.startswith("."):
                files.append(path)
    return files


def _check_vars_dirs(source: Path, inventory: Any) -> None:
    """A variables file for a group or host the inventory does not have reaches no host: name the likely one."""
    for dirname, names in (("group_vars", inventory.groups), ("host_vars", {h.name for h in inventory.get_hosts()})):
        base = source.parent / dirname
        for entry in sorted(base.iterdir()) if base.is_dir() else []:
            stem = entry.name if entry.is_dir() else entry.name.removesuffix(entry.suffix)
            if entry.name.startswith(".") or (entry.is_file() and entry.suffix not in _VARS_SUFFIXES):
                continue
            if stem not in names:
                close = difflib.get_close_matches(stem, sorted(names), n=1)
                hint = f"; did you mean {dirname}/{close[0]}?" if close else ""
                kind = "group" if dirname == "group_vars" else "host"
                raise ConfigError(
                    str(entry), "", f"names no {kind} of {source.name}, so its variables reach no host{hint}"
                )


def _plain(data: Any) -> dict[str, Any]:
    """Ansible wraps strings in its own types; the core wants plain JSON data."""
    visible = {k: v for k, v in data.items() if k not in C.INTERNAL_STATIC_VARS}
    return dict(json.loads(json.dumps(visible, default=str)))


def _first_line(err: AnsibleError) -> str:
    """Ansible's messages carry the offending lines and hints over several lines; the first says what failed."""
    message = getattr(err, "message", None) or str(err)
    return " ".join((message.strip().splitlines() or ["(no message)"])[0].split())


def _check_yaml(source: Path) -> None:
    """Read the file as YAML once before Ansible does: one line for what Ansible reports over many (or hides
    behind a fallback to its other plugins), and a host written twice in one mapping (YAML keeps the last)."""

    class _Loader(yaml.SafeLoader):
        pass

    def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        # A merge key (<<) is YAML's way to reuse an anchor, not a key of its own.
        keys = [loader.construct_object(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
        dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
        if dupes:
            raise ConfigError(
                dupes[0], "inventory", f"appears twice in the same YAML mapping (line {node.start_mark.line + 1})"
            )
        return dict(loader.construct_mapping(node))

    def _ansible_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> None:
        return None  # !vault, !unsafe: Ansible's own tags, read by Ansible itself

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    _Loader.add_multi_constructor("!", _ansible_tag)
    text = read_text(source)
    try:
        document = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        what = " ".join(filter(None, [err.problem, err.context and f"({err.context})"]))
        raise ConfigError(where, "", f"is not valid YAML: {what}") from None
    except yaml.YAMLError as err:
        raise ConfigError(str(source), "", f"is not valid YAML: {' '.join(str(err).split())}") from None
    # An inventory (and a group_vars file) is a mapping; Ansible's INI fallback reads a bare word as a host.
    if document is not None and not isinstance(document, dict):
        raise ConfigError(str(source), "", f"holds a YAML {type(document).__name__}, not a mapping")
