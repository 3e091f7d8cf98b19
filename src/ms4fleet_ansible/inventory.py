"""Ansible YAML inventories read by Ansible itself: ``InventoryManager`` + ``VariableManager``, so
``group_vars/``, ``host_vars/``, children, ranges and their precedence are exactly what ``ansible-playbook``
(and ``ansible-inventory --host``) sees. Registered as the ``yml``/``yaml`` loader of the entry-point group
``ms4fleet.inventory_loaders``; the core never imports this module by name.

+ ``read_hosts(path)``: e.g. ``read_hosts(Path("inventory/example.yml"))`` -> ``[(name, groups, vars), ...]``
  with every variable Ansible gives the host (its own wrapped strings made plain).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.vars.manager import VariableManager

from ansible import constants as C
from ms4fleet.config import ConfigError

RawHost = tuple[str, tuple[str, ...], dict[str, Any]]


def read_hosts(source: Path) -> list[RawHost]:
    """Every host of a YAML inventory, its groups (without ``all``/``ungrouped``) and its variables."""
    _check_yaml_duplicates(source)
    loader = DataLoader()
    try:
        inventory = InventoryManager(loader=loader, sources=[str(source)])
    except AnsibleError as err:
        raise ConfigError(str(source), "", f"cannot be read by Ansible: {err}") from None
    variables = VariableManager(loader=loader, inventory=inventory)
    hosts: list[RawHost] = []
    for host in inventory.get_hosts():
        # What `ansible-inventory --host` prints: every stage of vars plugins, Ansible's internal vars left out.
        data = variables.get_vars(host=host, include_hostvars=False, stage="all")
        groups = tuple(g.name for g in host.get_groups() if g.name not in {"all", "ungrouped"})
        hosts.append((host.name, groups, _plain(data)))
    return hosts


def _plain(data: Any) -> dict[str, Any]:
    """Ansible wraps strings in its own types; the core wants plain JSON data."""
    visible = {k: v for k, v in data.items() if k not in C.INTERNAL_STATIC_VARS}
    return dict(json.loads(json.dumps(visible, default=str)))


def _check_yaml_duplicates(source: Path) -> None:
    """YAML mappings silently keep the last of two equal keys: a host written twice is a mistake."""

    class _Loader(yaml.SafeLoader):
        pass

    def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [loader.construct_object(k) for k, _ in node.value]
        dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
        if dupes:
            raise ConfigError(
                dupes[0], "inventory", f"appears twice in the same YAML mapping (line {node.start_mark.line + 1})"
            )
        return dict(loader.construct_mapping(node))

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    try:
        yaml.load(source.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(str(source), "", f"is not valid YAML: {err}") from None
