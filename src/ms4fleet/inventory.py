"""One inventory loader for both engines: a pyinfra ``.py`` inventory or an Ansible YAML inventory in,
validated ``HostSpec`` records out.

pyinfra inventories are read with pyinfra's own CLI loader (so ``group_data/`` works exactly as in
``pyinfra inventory.py deploy.py``). Ansible YAML is read with Ansible's own inventory and vars plugins
(so ``group_vars/``, ``host_vars/``, children and ranges work exactly as in ``ansible-playbook``).
Either way a top-level ``ms4fleet_*`` key set at a narrower level replaces the broader one.

+ ``load_inventory(path)``: e.g. ``load_inventory("inventory/example.py")`` -> ``Fleet``; raises
  ``ConfigError`` naming the host and field for the first problem found.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ms4fleet.config import ConfigError, HostConfig

# Connection keys each engine understands, mapped to one neutral name.
_CONNECTION_KEYS = {
    "ssh_hostname": "hostname",
    "ansible_host": "hostname",
    "ssh_port": "port",
    "ansible_port": "port",
    "ssh_user": "user",
    "ansible_user": "user",
    "ssh_key": "key",
    "ansible_ssh_private_key_file": "key",
}


@dataclass(frozen=True)
class HostSpec:
    """One inventory host: its name, groups, how to reach it, and its validated config."""

    name: str
    groups: tuple[str, ...]
    config: HostConfig
    connection: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        return str(self.connection.get("hostname", self.name)), int(self.connection.get("port", 22))


@dataclass(frozen=True)
class Fleet:
    path: str
    hosts: tuple[HostSpec, ...]

    def __iter__(self) -> Iterator[HostSpec]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def select(self, limits: list[str] | None) -> Fleet:
        """Hosts whose name or group is in ``limits`` (all when empty), inventory order kept."""
        if not limits:
            return self
        wanted = set(limits)
        return Fleet(self.path, tuple(h for h in self.hosts if h.name in wanted or wanted & set(h.groups)))


def load_inventory(path: str | Path) -> Fleet:
    """Read and validate every host of an inventory, before any host is contacted."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(str(source), "", "inventory file not found")
    if source.suffix == ".py":
        raw = list(_pyinfra_hosts(source))
    elif source.suffix in {".yml", ".yaml"}:
        raw = list(_ansible_hosts(source))
    else:
        raise ConfigError(str(source), "", "is neither a pyinfra .py nor an Ansible .yml inventory")
    if not raw:
        raise ConfigError(str(source), "", "defines no hosts")
    hosts = [
        HostSpec(
            name=name,
            groups=groups,
            config=HostConfig.from_host_data(name, data),
            connection={_CONNECTION_KEYS[k]: v for k, v in data.items() if k in _CONNECTION_KEYS},
            data=data,
        )
        for name, groups, data in raw
    ]
    _check_unique_addresses(hosts)
    return Fleet(str(source), tuple(hosts))


def _check_unique_addresses(hosts: list[HostSpec]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for host in hosts:
        other = seen.setdefault(host.address, host.name)
        if other != host.name:
            hostname, port = host.address
            raise ConfigError(
                host.name,
                "address",
                f"{hostname}:{port} is also host {other}: one machine must appear once in the inventory",
            )


def _pyinfra_hosts(source: Path) -> Iterator[tuple[str, tuple[str, ...], dict[str, Any]]]:
    from pyinfra.api.state import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory_from_files

    _check_python_duplicates(source)
    # pyinfra warns through its logger while importing group data; the CLI output stays ours.
    logging.getLogger("pyinfra").setLevel(logging.ERROR)
    try:
        # pyinfra's loader records the file being executed on the current state: give it a throwaway one.
        with ctx_state.use(State(check_for_changes=False)):
            inventory = make_inventory_from_files(str(source), cwd=str(source.parent))
    except Exception as err:  # pyinfra raises plain exceptions for unreadable inventories
        raise ConfigError(str(source), "", f"cannot be read by pyinfra: {err}") from None
    file_group = source.stem
    for host in inventory:
        groups = tuple(g for g in host.groups if g not in {"all", file_group})
        yield host.name, groups, dict(host.data.dict())


def _check_python_duplicates(source: Path) -> None:
    """pyinfra silently merges a host listed twice in one group; flag that as the mistake it is."""
    import runpy

    try:
        module = runpy.run_path(str(source))
    except Exception as err:
        raise ConfigError(str(source), "", f"fails to import: {err}") from None
    for group, value in module.items():
        if group.startswith("_"):
            continue
        hosts = value[0] if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict) else value
        if not isinstance(hosts, list):
            continue
        names = [h[0] if isinstance(h, tuple) else h for h in hosts]
        if not all(isinstance(n, str) for n in names):
            continue
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(dupes[0], "inventory", f"is listed twice in group {group!r}: list each host once")


def _ansible_hosts(source: Path) -> Iterator[tuple[str, tuple[str, ...], dict[str, Any]]]:
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    _check_yaml_duplicates(source)
    loader = DataLoader()
    try:
        inventory = InventoryManager(loader=loader, sources=[str(source)])
    except AnsibleError as err:
        raise ConfigError(str(source), "", f"cannot be read by Ansible: {err}") from None
    variables = VariableManager(loader=loader, inventory=inventory)
    for host in inventory.get_hosts():
        data = variables.get_vars(host=host, include_hostvars=False, include_delegate_to=False)
        groups = tuple(g.name for g in host.get_groups() if g.name not in {"all", "ungrouped"})
        yield host.name, groups, _plain(data)


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """Ansible wraps strings in its own types; the core wants plain data."""
    import json

    wanted = {k: v for k, v in data.items() if k.startswith("ms4fleet_") or k in _CONNECTION_KEYS}
    return dict(json.loads(json.dumps(wanted, default=str)))


def _check_yaml_duplicates(source: Path) -> None:
    """YAML mappings silently keep the last of two equal keys: a host written twice is a mistake."""
    import yaml

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
