"""Inventories in, validated ``HostSpec`` records out: each file is read by its engine's own loader.

The core reads no inventory format itself: an engine registers a loader for a file suffix in the
entry-point group ``ms4fleet.inventory_loaders`` (``py``: ``ms4fleet_pyinfra.inventory``, pyinfra's own CLI
loader; ``yml``/``yaml``: ``ms4fleet_ansible.inventory``, Ansible's InventoryManager + VariableManager), so
the data the core validates and plans is exactly what that engine will apply, with that engine's precedence.
A loader is ``read_hosts(path) -> [RawHost, ...]`` raising ``ConfigError`` (one line) for anything else.

+ ``load_inventory(path)``: e.g. ``load_inventory("inventory/example.py")`` -> ``Fleet``; raises
  ``ConfigError`` naming the host and field for the first problem found.
+ ``read_text(path)``: a file as UTF-8 text or one ``ConfigError`` line (unreadable, another encoding).
+ ``validate_hosts(raw_hosts, deploying=...)``: the same checks on hosts an engine already read (both
  engines' preflight calls it for every host of the run before touching any): each host's ``HostConfig``,
  its SSH host-key setting (``ms4fleet.hostkeys``) and the fleet-wide rules (canonical names, no tie between
  groups, one machine once, serving ports).
"""

from __future__ import annotations

import ipaddress
import os
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ms4fleet import apikey, hostkeys
from ms4fleet.config import KEY_PREFIX, ConfigError, HostConfig
from ms4fleet.rollout import lb
from ms4fleet.secrets import service_secret_refs

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


def connection_of(data: Mapping[str, Any]) -> dict[str, Any]:
    """A host's connection keys (pyinfra's or Ansible's) under their neutral names: hostname, port, user, key."""
    return {_CONNECTION_KEYS[k]: v for k, v in data.items() if k in _CONNECTION_KEYS}


# A host name is what ssh, DNS and both engines' --limit match on: printable ASCII without spaces.
_NAME_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


@dataclass(frozen=True)
class GroupSettings:
    """One group's own ``ms4fleet_*`` settings for a host and its place in the engine's precedence."""

    name: str
    # A higher rank wins. Equal ranks are a tie the engine breaks by file order or name, which nobody
    # reading the inventory can see: two such groups setting one key differently is refused.
    rank: tuple[int, ...]
    data: Mapping[str, Any]


@dataclass(frozen=True)
class RawHost:
    """One host as its engine's loader read it: merged data plus what each group said on its own."""

    name: str
    groups: tuple[str, ...]
    data: Mapping[str, Any]
    group_settings: tuple[GroupSettings, ...] = ()
    # ms4fleet_* keys set above every group (the host itself, extra vars): they settle any group tie.
    own_keys: frozenset[str] = frozenset()


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


def load_inventory(path: str | Path, *, deploying: bool = False) -> Fleet:
    """Read and validate every host of an inventory, before any host is contacted."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(str(source), "", "inventory file not found")
    raw = _loader_for(source)(source)
    if not raw:
        raise ConfigError(str(source), "", "defines no hosts")
    return Fleet(str(source), tuple(validate_hosts(raw, deploying=deploying)))


def read_text(path: Path) -> str:
    """An inventory file (or one it includes) as UTF-8 text, or one line saying why it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(str(path), "", f"cannot be read: {err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            str(path), "", f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}): save it as UTF-8"
        ) from None


def validate_hosts(raw_hosts: Iterable[RawHost], *, deploying: bool = False) -> list[HostSpec]:
    """Every host's config and the fleet-wide rules. ``deploying``: the run serves the model (deploy, rollout),
    so each host needs its weights section and every secret it references by environment variable set here."""
    raw = list(raw_hosts)
    _check_names(raw)
    hosts = []
    for host in raw:
        _check_group_ties(host)
        config = HostConfig.from_host_data(host.name, host.data)
        hostkeys.policy(host.name, host.data)
        if deploying:
            _check_deployable(config)
        hosts.append(
            HostSpec(
                name=host.name,
                groups=host.groups,
                config=config,
                connection=connection_of(host.data),
                data=host.data,
            )
        )
    _check_unique_addresses(hosts)
    _check_shared_address_ports(hosts)
    return hosts


def _check_names(raw: list[RawHost]) -> None:
    """One host written two ways is one host; a name with a look-alike or invisible character is refused."""
    seen: dict[str, str] = {}
    for host in raw:
        folded = unicodedata.normalize("NFKC", host.name).casefold()
        other = seen.setdefault(folded, host.name)
        if other != host.name:
            raise ConfigError(
                ascii(host.name),
                "name",
                f"is host {other!a} written another way (case or Unicode form): write each host once, one way",
            )
        odd = next((c for c in host.name if c not in _NAME_CHARS), None)
        if odd is not None or not host.name:
            what = f"U+{ord(odd):04X} {unicodedata.name(odd, 'a control character')}" if odd else "nothing"
            raise ConfigError(
                ascii(host.name),
                "name",
                f"holds {what}: host names are printable ASCII (a look-alike or invisible character "
                "makes a second host that --limit and ssh do not match)",
            )


def _check_deployable(config: HostConfig) -> None:
    if config.weights is None:
        raise ConfigError(
            config.name,
            "weights",
            "is missing: set ms4fleet_weights (source, revision, ...) so the host can be given its model",
        )
    refs = {"serving.api_key": config.serving.api_key}
    if config.weights.source == "hub":
        refs["weights.hf_token"] = config.weights.hf_token
    for where, ref in refs.items():
        # Read on the controller when the run starts (uploaded, or used to fetch): unset means an empty secret.
        if ref is not None and ref.env is not None and not os.environ.get(ref.env):
            raise ConfigError(
                config.name,
                f"{where}.env",
                f"names {ref.env}, which is unset or empty on this controller: export it before the run",
            )
    if any(source.generated for _, source in service_secret_refs(config).values()):
        # Made (once) before any host is touched, so every engine step after this reads the same key.
        try:
            apikey.ensure_key()
        except apikey.ApiKeyError as err:
            raise ConfigError(config.name, "serving.api_key", f"is unset and {err}") from None


def _check_group_ties(host: RawHost) -> None:
    """Two groups of equal precedence giving one ms4fleet_* key different values: the engine picks one silently."""
    keys = {k for g in host.group_settings for k in g.data if k.startswith(KEY_PREFIX)} - host.own_keys
    for key in sorted(keys):
        setters = [g for g in host.group_settings if key in g.data]
        top = max(g.rank for g in setters)
        winners = [g for g in setters if g.rank == top]
        differing = [g for g in winners if g.data[key] != winners[0].data[key]]
        if differing:
            first, second = sorted((winners[0].name, differing[0].name))
            raise ConfigError(
                host.name,
                key,
                f"is set differently by groups {first!r} and {second!r}, neither of which overrides the other: "
                "set it in one group only, on the host, or in a child group of both",
            )


def _canonical_hostname(hostname: str) -> str:
    """``GPU-1.Example.`` and ``gpu-1.example`` are one machine; so are two spellings of one IP address."""
    try:
        return str(ipaddress.ip_address(hostname.strip("[]")))
    except ValueError:
        return hostname.rstrip(".").casefold()


def _check_unique_addresses(hosts: list[HostSpec]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for host in hosts:
        hostname, port = host.address
        other = seen.setdefault((_canonical_hostname(hostname), port), host.name)
        if other != host.name:
            raise ConfigError(
                host.name,
                "address",
                f"{hostname}:{port} is also host {other}: one machine must appear once in the inventory",
            )


def _check_shared_address_ports(hosts: list[HostSpec]) -> None:
    """Hosts the load balancer reaches at one address (containers or VMs behind one IP) that serve on it need
    distinct ports: the load balancer and clients reach every replica as ``address:port``. The address is the
    load balancer's (``lb.backend_address``), not merely the SSH one: containers on distinct SSH ports of one
    address may well be reached at their own addresses."""
    from ms4fleet.serving import plan_host

    by_address: dict[str, list[HostSpec]] = {}
    for host in hosts:
        if not ipaddress.ip_address(host.config.serving.bind_address).is_loopback:
            address = lb.backend_address(host.name, host.data, host.connection.get("hostname"))
            by_address.setdefault(_canonical_hostname(address), []).append(host)
    for sharing in by_address.values():
        if len(sharing) < 2:
            continue
        owner: dict[int, str] = {}
        for host in sharing:
            for replica in plan_host(host.config).replicas:
                other = owner.setdefault(replica.port, host.name)
                if other != host.name:
                    raise ConfigError(
                        host.name,
                        f"serving.replicas[{replica.index}].port",
                        f"={replica.port} is also a port of host {other} at the same address "
                        f"{lb.backend_address(host.name, host.data, host.connection.get('hostname'))}: "
                        "give the hosts different serving.port ranges (or each its lb_backend_address)",
                    )


def _loader_for(source: Path) -> Callable[[Path], list[RawHost]]:
    """The installed engine loader registered for this file's suffix."""
    suffix = source.suffix.lstrip(".")
    found = [e for e in entry_points(group="ms4fleet.inventory_loaders") if e.name == suffix]
    if not found:
        raise ConfigError(str(source), "", "is neither a pyinfra .py nor an Ansible .yml inventory")
    try:
        loader: Callable[[Path], list[RawHost]] = found[0].load()
    except ImportError as err:
        raise ConfigError(str(source), "", f"needs its engine installed to be read ({err})") from None
    return loader
