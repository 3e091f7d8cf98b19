"""Inventories in, validated ``HostSpec`` records out: each file is read by its engine's own loader.

The core reads no inventory format itself: an engine registers a loader for a file suffix in the
entry-point group ``ms4fleet.inventory_loaders`` (``py``: ``ms4fleet_pyinfra.inventory``, pyinfra's own CLI
loader; ``yml``/``yaml``: ``ms4fleet_ansible.inventory``, Ansible's InventoryManager + VariableManager), so
the data the core validates and plans is exactly what that engine will apply, with that engine's precedence.
A loader is ``read_hosts(path) -> [(name, groups, data), ...]`` raising ``ConfigError``.

+ ``load_inventory(path)``: e.g. ``load_inventory("inventory/example.py")`` -> ``Fleet``; raises
  ``ConfigError`` naming the host and field for the first problem found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
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
    raw = _loader_for(source)(source)
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


RawHosts = list[tuple[str, tuple[str, ...], dict[str, Any]]]


def _loader_for(source: Path) -> Callable[[Path], RawHosts]:
    """The installed engine loader registered for this file's suffix."""
    suffix = source.suffix.lstrip(".")
    found = [e for e in entry_points(group="ms4fleet.inventory_loaders") if e.name == suffix]
    if not found:
        raise ConfigError(str(source), "", "is neither a pyinfra .py nor an Ansible .yml inventory")
    try:
        loader: Callable[[Path], RawHosts] = found[0].load()
    except ImportError as err:
        raise ConfigError(str(source), "", f"needs its engine installed to be read ({err})") from None
    return loader
