"""The load balancer in front of the fleet: Debian's nginx, with its config text rendered here only.

+ ``nginx_conf(backends, down=...)``: the ``upstream`` of every replica (passive health: ``max_fails`` /
  ``fail_timeout``; a failed attempt moves to the next replica) and the ``server`` proxying to it. A host
  being drained (a name in ``down``) has its replicas marked ``down``; a ``Backend`` in ``down`` marks that
  one replica (a GPU gone bad under it) while the host's others keep serving. ms4fleet writes the file and
  runs ``nginx -s reload``.
+ ``settings_from_data(name, data)``: an LB host's TLS settings (``TLS_KEYS``) validated; with them the LB
  listens with TLS only. ``key_check_script(settings)`` refuses a key that is not root's alone.
+ Only ``/v1/`` and ``/health`` pass (``ms4fleet.proxy.api_locations``, as on each host): any other path is 404.
+ ``routed(conf_text)``: the hosts a config written by ``nginx_conf`` routes to, those it marks down, and
  each replica (host, server) marked down.
+ ``in_flight(metrics_text)``: requests a replica is still running or holding (vLLM's gauges).
+ ``wait_drained(poll, ...)``: poll until nothing is in flight, before the replica is stopped.

nginx's reload is graceful: new workers use the new upstream, old workers finish the requests they hold,
then exit. So "drained" = no old worker left (``nginx_old_workers``) and the replicas' gauges at zero.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ms4fleet.config import ConfigError
from ms4fleet.escape import unsafe_char
from ms4fleet.proxy import READ_TIMEOUT_S, api_locations
from ms4fleet.values import host_path

CONF_PATH = "/etc/nginx/conf.d/ms4fleet.conf"
# Host data naming the address the load balancer reaches a host's replicas at (else its SSH hostname).
ADDRESS_KEY = "lb_backend_address"
# Host data naming the load balancer's own pyinfra inventory (what `ms4fleet rollout --lb-inventory` takes), so that
# a plain deploy drains hosts from it too; the same value on every host of the fleet.
INVENTORY_KEY = "lb_inventory"
UPSTREAM = "ms4fleet_vllm"
LISTEN_PORT = 8080
TLS_PORT = 443
# LB host data: the TLS certificate and key (paths on the LB host; the key root's, 0600) and the TLS port.
TLS_KEYS = ("lb_tls_certificate", "lb_tls_key", "lb_tls_port")
# Gauges vLLM (V1) exports per model: requests decoding now, and queued ones it has accepted.
IN_FLIGHT_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
# Old nginx workers rename themselves while they finish their requests after a reload.
OLD_WORKER_TITLE = "nginx: worker process is shutting down"
# The drain window: how long a drained replica may keep finishing its requests before it is stopped anyway.
# vLLM's own drain on stop (``--shutdown-timeout``, ms4fleet.serving) and systemd's stop timeout derive from it.
DRAIN_WINDOW_S = 300
_SERVER = re.compile(r"^\s*server\s+(?P<server>\S+)\s[^;#]*?(?P<down>\sdown)?;\s*#\s*(?P<host>\S+)\s*$", re.MULTILINE)
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)", re.MULTILINE)


def lb_inventory_of(hosts: Sequence[tuple[str, Mapping[str, Any]]]) -> str | None:
    """The load balancer inventory named by the hosts' ``lb_inventory`` data (None: no host names one), or
    ``ConfigError`` naming the first host that names another one, or a value that is not a file path."""
    found: tuple[str, str] | None = None
    for name, data in hosts:
        value = data.get(INVENTORY_KEY)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip() or unsafe_char(value) is not None:
            raise ConfigError(name, INVENTORY_KEY, "must be the path of the load balancer's pyinfra inventory file")
        if found is not None and found[1] != value:
            raise ConfigError(
                name, INVENTORY_KEY, f"={value!r} but {found[0]} names {found[1]!r}: one load balancer per fleet"
            )
        found = found or (name, value)
    missing = [name for name, data in hosts if data.get(INVENTORY_KEY) is None]
    if found is not None and missing:
        raise ConfigError(
            missing[0], INVENTORY_KEY, f"is not set but {found[0]} names {found[1]!r}: set it for every host"
        )
    return found[1] if found else None


def backend_address(name: str, data: Mapping[str, Any], hostname: str | None) -> str:
    """Where the load balancer reaches host ``name``'s replicas: ``lb_backend_address``, else the SSH
    hostname, else the inventory name."""
    return str(data.get(ADDRESS_KEY) or hostname or name)


@dataclass(frozen=True)
class Backend:
    """One replica behind the load balancer: its host (inventory name), address and port."""

    host: str
    address: str
    port: int

    @property
    def server(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{address}:{self.port}"


@dataclass(frozen=True)
class LbSettings:
    listen_port: int = LISTEN_PORT
    # Passive health: one failed attempt takes a replica out for fail_timeout seconds.
    max_fails: int = 1
    fail_timeout_s: int = 10
    # Long generations stream for minutes; nginx's 60 s default would cut them.
    read_timeout_s: int = READ_TIMEOUT_S
    # TLS (a certificate and its key on the LB host): then the LB listens on tls_port only, never in clear.
    tls_port: int = TLS_PORT
    tls_certificate: str | None = None
    tls_key: str | None = None


def settings_from_data(name: str, data: Mapping[str, Any]) -> LbSettings:
    """The LB host ``name``'s settings from its inventory data (``TLS_KEYS``), validated: one line naming
    the host and the key on bad input."""
    cert_key, key_key, port_key = TLS_KEYS
    paths: dict[str, str | None] = {}
    for key in (cert_key, key_key):
        value = data.get(key)
        if value is None:
            paths[key] = None
            continue
        try:
            paths[key] = host_path(value) if isinstance(value, str) else host_path("")
        except ValueError as err:
            where = "give the absolute path of the file on the load balancer host"
            raise ConfigError(name, key, f"{err}: {where}") from None
    if (paths[cert_key] is None) != (paths[key_key] is None):
        raise ConfigError(
            name, cert_key if paths[cert_key] is None else key_key, f"is missing: set both {cert_key} and {key_key}"
        )
    port = data.get(port_key, TLS_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(name, port_key, f"={port!r} is not a TCP port (1-65535)")
    return LbSettings(tls_port=port, tls_certificate=paths[cert_key], tls_key=paths[key_key])


def key_check_script(settings: LbSettings) -> str:
    """Shell that refuses a TLS key which is not root's alone (mode 0600 or 0400), before nginx reads it."""
    if settings.tls_key is None:
        return "true"
    key = shlex.quote(settings.tls_key)
    return (
        f'set -- $(stat -L -c "%u %a" {key}) || exit 1; '
        f'if [ "$1" != 0 ] || {{ [ "$2" != 600 ] && [ "$2" != 400 ]; }}; then '
        f'echo "{TLS_KEYS[1]}: {settings.tls_key} is uid $1 mode $2: chown root:root and chmod 0600 it" >&2; exit 1; fi'
    )


def is_down(backend: Backend, down: Collection[str | Backend]) -> bool:
    """``backend`` takes no new requests: its host is drained, or it is (its GPU went bad)."""
    return backend.host in down or backend in down


def nginx_conf(
    backends: Sequence[Backend], down: Collection[str | Backend] = (), settings: LbSettings | None = None
) -> str:
    """The whole of ``CONF_PATH``. ``down``: hosts whose replicas take no new requests (drained), and
    single replicas (``Backend``) that take none while their host's others serve."""
    if not backends:
        raise ValueError("the load balancer needs at least one replica")
    s = settings or LbSettings()
    if all(is_down(b, down) for b in backends):
        raise ValueError("every replica would be down: the load balancer would refuse all requests")
    servers = []
    for backend in backends:
        flags = " down" if is_down(backend, down) else ""
        servers.append(
            f"    server {backend.server} max_fails={s.max_fails} fail_timeout={s.fail_timeout_s}s{flags};"
            f"  # {backend.host}"
        )
    if s.tls_certificate and s.tls_key:
        listen = [
            f"    listen {s.tls_port} ssl;",
            f"    ssl_certificate {s.tls_certificate};",
            f"    ssl_certificate_key {s.tls_key};",
            "    ssl_protocols TLSv1.2 TLSv1.3;",
        ]
    else:
        listen = [f"    listen {s.listen_port};"]
    retry = [
        # A replica that refuses the connection, answers 502/503 (dying, starting) or 500 (vLLM's answer
        # once its engine died: EngineDeadError) is skipped and counts as a failure for max_fails. A
        # completion has no side effect beyond compute, so resending a POST to another replica is safe.
        "proxy_next_upstream error timeout http_500 http_502 http_503 non_idempotent;",
        f"proxy_next_upstream_tries {min(len(backends), 3)};",
    ]
    return "\n".join(
        [
            "# Managed by ms4fleet: rewritten on every rollout step (drain, rejoin).",
            f"upstream {UPSTREAM} {{",
            *servers,
            "    keepalive 32;",
            "}",
            "",
            "server {",
            *listen,
            "    client_max_body_size 64m;",
            # The API and /health only, as on each host's proxy (ms4fleet.proxy): every other path is 404.
            *api_locations(UPSTREAM, s.read_timeout_s, retry),
            "}",
            "",
        ]
    )


@dataclass(frozen=True)
class Routed:
    """What a load balancer's config routes to now: hosts with every replica up, hosts with any replica
    down, and each replica marked down as (host, ``Backend.server``)."""

    up: frozenset[str]
    down: frozenset[str]
    down_backends: frozenset[tuple[str, str]] = frozenset()

    def is_down(self, backend: Backend) -> bool:
        return (backend.host, backend.server) in self.down_backends


def routed(conf_text: str) -> Routed:
    """Read back a config ``nginx_conf`` wrote (each server line names its host in a comment); a host with
    any replica marked down counts as down."""
    up: set[str] = set()
    down: set[str] = set()
    down_backends: set[tuple[str, str]] = set()
    for match in _SERVER.finditer(conf_text):
        if match.group("down"):
            down.add(match.group("host"))
            down_backends.add((match.group("host"), match.group("server")))
        else:
            up.add(match.group("host"))
    return Routed(frozenset(up - down), frozenset(down), frozenset(down_backends))


def in_flight(metrics_text: str) -> float:
    """Sum of the in-flight gauges over every model a replica's /metrics reports."""
    total = 0.0
    found = False
    for match in _SAMPLE.finditer(metrics_text):
        if match.group("name") in IN_FLIGHT_GAUGES:
            try:
                total += float(match.group("value"))
            except ValueError:
                continue
            found = True
    if not found:
        raise ValueError(f"/metrics has none of {', '.join(IN_FLIGHT_GAUGES)}: not a vLLM server?")
    return total


@dataclass(frozen=True)
class DrainResult:
    drained: bool
    waited_s: float
    last_in_flight: float | None
    detail: str


def wait_drained(
    poll: Callable[[], float | None],
    timeout_s: float = DRAIN_WINDOW_S,
    interval_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DrainResult:
    """Poll ``poll()`` (requests in flight, or None when the replicas cannot be read) until it reads 0 twice
    in a row, so a request handed over between two polls is not missed. Unreadable counts as not drained."""
    started = clock()
    zeros = 0
    last: float | None = None
    while True:
        last = poll()
        zeros = zeros + 1 if last == 0 else 0
        waited = clock() - started
        if zeros >= 2:
            return DrainResult(True, waited, last, f"no request in flight after {waited:.1f}s")
        if waited >= timeout_s:
            shown = "unreadable" if last is None else f"{last:g}"
            return DrainResult(False, waited, last, f"still {shown} request(s) in flight after {timeout_s:g}s")
        sleep(interval_s)
