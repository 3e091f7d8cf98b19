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

from collections import Counter
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


# Extra ssh arguments an Ansible inventory may carry (host-key options, jump hosts): kept in HostSpec.data.
_SSH_ARGS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")


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
    """Groups and data as ``pyinfra inventory.py deploy.py`` sees them.

    pyinfra's own loader is not used: importing ``pyinfra_cli`` monkey-patches the whole process with
    gevent, and ``pyinfra.api`` alone costs a second of start-up (paramiko, invoke). The merge below is
    pyinfra's (``Inventory.make_hosts_and_groups`` and ``HostData``): host data > group data, later
    groups first > ``all``; tests/unit/test_inventory.py checks it against pyinfra itself.
    """
    groups = {name: value for name, value in _exec(source).items() if _is_host_group(name, value)}
    for name, value in groups.items():
        _check_python_duplicates(name, _hosts_of(value))
    group_data: dict[str, dict[str, Any]] = {}
    data_dir = source.parent / "group_data"
    if data_dir.is_dir():
        for path in sorted(data_dir.glob("*.py")):
            group_data[path.stem] = {k: v for k, v in _exec(path).items() if not k.startswith("_")}
    all_group = groups.pop("all", None)
    # Without an explicit "all" group, pyinfra's is every host name, once, in first-seen order.
    all_hosts = _hosts_of(all_group) if all_group is not None else list(dict.fromkeys(_names(groups.values())))
    all_data = {**group_data.pop("all", {}), **(all_group[1] if isinstance(all_group, tuple) else {})}
    file_group = source.stem
    groups.setdefault(file_group, all_hosts)
    host_data: dict[str, dict[str, Any]] = {}
    host_groups: dict[str, list[str]] = {}
    merged_groups: dict[str, dict[str, Any]] = {}
    for name, value in groups.items():
        merged_groups[name] = {**group_data.get(name, {}), **(value[1] if isinstance(value, tuple) else {})}
        for entry in _hosts_of(value):
            host, data = (entry[0], entry[1]) if isinstance(entry, tuple) else (entry, {})
            host_data.setdefault(host, {}).update(data)
            host_groups.setdefault(host, []).append(name)
    for entry in all_hosts:
        host, data = (entry[0], entry[1]) if isinstance(entry, tuple) else (entry, {})
        host_data.setdefault(host, {}).update(data)
        merged: dict[str, Any] = dict(all_data)
        for group in host_groups.get(host, []):
            merged.update(merged_groups[group])
        merged.update(host_data[host])
        yield host, tuple(g for g in host_groups.get(host, []) if g != file_group), merged


def _exec(path: Path) -> dict[str, Any]:
    import runpy

    try:
        return runpy.run_path(str(path))
    except Exception as err:
        raise ConfigError(str(path), "", f"fails to import: {type(err).__name__}: {err}") from None


def _is_host_group(name: str, value: Any) -> bool:
    """pyinfra's rule: a public module attribute holding a list of hosts, or a (hosts, data) tuple."""
    if name.startswith("_"):
        return False
    hosts = value[0] if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict) else value
    return isinstance(hosts, list) and all(isinstance(h, (str, tuple)) for h in hosts)


def _names(groups: Any) -> Iterator[str]:
    for value in groups:
        for host in _hosts_of(value):
            yield host[0] if isinstance(host, tuple) else host


def _hosts_of(value: Any) -> list[Any]:
    return list(value[0] if isinstance(value, tuple) else value)


def _check_python_duplicates(group: str, hosts: list[Any]) -> None:
    """pyinfra silently merges a host listed twice in one group; flag that as the mistake it is."""
    counts = Counter(h[0] if isinstance(h, tuple) else h for h in hosts)
    dupes = sorted(name for name, seen in counts.items() if seen > 1)
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
        data = variables.get_vars(host=host, include_hostvars=False)
        groups = tuple(g.name for g in host.get_groups() if g.name not in {"all", "ungrouped"})
        yield host.name, groups, _plain(data)


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """Ansible wraps strings in its own types; the core wants plain data."""
    import json

    wanted = {k: v for k, v in data.items() if k.startswith("ms4fleet_") or k in _CONNECTION_KEYS or k in _SSH_ARGS}
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
