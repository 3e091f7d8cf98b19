"""The nginx load balancer, driven over the pyinfra API: write the core's config (``ms4fleet.rollout.lb``),
test it, reload gracefully, and wait until the workers of the old config have finished their requests.

+ ``LoadBalancer(hosts, backends)``: ``apply(down)`` makes the LB hosts route to every replica except those
  of the ``down`` hosts and the ``down`` replicas (``lb.Backend``); returns the LB hosts it failed on.
  ``read()``: what each LB host routes to now.
+ ``backends_for(specs, plans)``: the replicas as the LB reaches them (host data ``lb_backend_address``, else
  the SSH hostname).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api.command import FunctionCommand
from pyinfra.api.operation import operation

from ms4fleet.config import ConfigError
from ms4fleet.inventory import HostSpec
from ms4fleet.rollout import lb
from ms4fleet.serving import ServingPlan
from ms4fleet_pyinfra.inventory import side_hosts
from ms4fleet_pyinfra.rollout.session import StateResult, run_state, shell, sudo_for

# Old workers finish their requests then exit; a streaming generation can take minutes.
OLD_WORKERS_TIMEOUT_S = 900.0
_NO_CONF = "--ms4fleet-no-conf--"
_RELOAD = """set -e
conf={conf}
old=$(pgrep -P "$(cat /run/nginx.pid)" 2>/dev/null | tr '\\n' ' ' || true)
if [ -f "$conf" ] && cmp -s "$conf" "$conf.new"; then rm -f "$conf.new"; echo "unchanged"; exit 0; fi
[ -f "$conf" ] && cp "$conf" "$conf.bak"
mv "$conf.new" "$conf"
if ! out=$({{ {key_check}; }} 2>&1 && nginx -t 2>&1); then
    if [ -f "$conf.bak" ]; then mv "$conf.bak" "$conf"; else rm -f "$conf"; fi
    echo "$out" >&2; exit 1
fi
rm -f "$conf.bak"
if systemctl is-active --quiet nginx; then nginx -s reload; else systemctl start nginx; fi
echo "reloaded $old"
"""


def backends_for(specs: Sequence[HostSpec], plans: Mapping[str, ServingPlan]) -> list[lb.Backend]:
    """Every replica of every host (its host proxy's port), in inventory order; a proxy bound to loopback
    cannot be reached."""
    out: list[lb.Backend] = []
    for spec in specs:
        plan = plans[spec.name]
        bind = spec.config.serving.bind_address
        if bind.startswith("127.") or bind == "::1":
            raise ConfigError(
                spec.name,
                "serving.bind_address",
                f"={bind!r} keeps the host proxy on loopback, out of the load balancer's reach: "
                "set 0.0.0.0 (or the address the load balancer uses)",
            )
        address = lb.backend_address(spec.name, spec.data, spec.connection.get("hostname"))
        out.extend(lb.Backend(spec.name, address, replica.port) for replica in plan.replicas)
    return out


def _wait_gone(host: Any, pids: list[str], sudo: bool, timeout_s: float) -> bool:
    """True once none of ``pids`` (the workers of the previous config) is alive."""
    if not pids:
        return True
    deadline = time.monotonic() + timeout_s
    check = " ".join(f"/proc/{int(pid)}" for pid in pids)
    while time.monotonic() < deadline:
        ok, out, _ = shell(host, f"for p in {check}; do [ -d $p ] && echo alive; done; true", sudo)
        if ok and "alive" not in out:
            return True
        time.sleep(0.2)
    return False


def _apply(state: Any, host: Any, text: str, key_check: str, sudo: bool, errors: dict[str, str]) -> bool:
    conf = shlex.quote(lb.CONF_PATH)
    ok, _, err = shell(host, f"mkdir -p $(dirname {conf}) && cat > {conf}.new", sudo, stdin=text)
    if not ok:
        errors[host.name] = f"writing {lb.CONF_PATH}: {err.strip()[-200:]}"
        return False
    ok, out, err = shell(host, _RELOAD.format(conf=conf, key_check=key_check), sudo)
    if not ok:
        errors[host.name] = f"nginx refused the config: {err.strip()[-300:]}"
        return False
    words = out.split()
    if words[:1] == ["reloaded"] and not _wait_gone(host, words[1:], sudo, OLD_WORKERS_TIMEOUT_S):
        errors[host.name] = f"old nginx workers still hold requests after {OLD_WORKERS_TIMEOUT_S:g}s"
        return False
    return True


def _read_conf(state: Any, host: Any, sudo: bool, texts: dict[str, str | None], errors: dict[str, str]) -> bool:
    conf = shlex.quote(lb.CONF_PATH)
    ok, out, err = shell(host, f"if [ -f {conf} ]; then cat {conf}; else echo {_NO_CONF}; fi", sudo)
    if not ok:
        errors[host.name] = f"reading {lb.CONF_PATH}: {err.strip()[-200:]}"
        return False
    texts[host.name] = None if out.strip() == _NO_CONF else out
    return True


@operation(is_idempotent=False)
def read_conf(sudo: bool, texts: dict[str, str | None], errors: dict[str, str]) -> Generator[Any, None, None]:
    yield FunctionCommand(_read_conf, (sudo, texts, errors), {})


@operation(is_idempotent=False)
def nginx_config(text: str, key_check: str, sudo: bool, errors: dict[str, str]) -> Generator[Any, None, None]:
    yield FunctionCommand(_apply, (text, key_check, sudo, errors), {})


@dataclass
class LoadBalancer:
    hosts: Sequence[LbHost]
    backends: Sequence[lb.Backend]
    errors: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Each LB host's own settings (TLS), validated before any host is touched.
        self.settings = {h.name: lb.settings_from_data(h.name, h.data) for h in self.hosts}

    def render(self, down: Collection[str | lb.Backend], host: str | None = None) -> str:
        return lb.nginx_conf(self.backends, down, self.settings.get(host or "", lb.LbSettings()))

    def read(self) -> tuple[lb.Routed | None, StateResult]:
        """What the LB hosts route to now: a host counts as up only where every LB host that has our config
        routes to it (None: no LB host has our config yet, so nothing is routed through it)."""
        texts: dict[str, str | None] = {}
        result = run_state(
            self.hosts,
            lambda spec: read_conf(sudo=sudo_for(spec), texts=texts, errors=self.errors, name="read nginx"),
        )
        states = [lb.routed(text) for text in texts.values() if text is not None]
        if not states:
            return None, result
        up = frozenset.intersection(*(r.up for r in states))
        down = frozenset.union(*(r.down for r in states)) | frozenset.union(*(r.up for r in states)) - up
        return lb.Routed(up, down, frozenset.union(*(r.down_backends for r in states))), result

    def apply(self, down: Collection[str | lb.Backend]) -> StateResult:
        """Route around the replicas of ``down`` (hosts, or single replicas); returns once old workers have
        finished their requests."""
        return run_state(
            self.hosts,
            lambda spec: nginx_config(
                text=self.render(down, spec.name),
                key_check=lb.key_check_script(self.settings[spec.name]),
                sudo=sudo_for(spec),
                errors=self.errors,
                name="nginx",
            ),
        )


@dataclass(frozen=True)
class LbHost:
    """A load balancer host from its own pyinfra inventory (it has no GPU, so no ms4fleet config)."""

    name: str
    data: Mapping[str, Any]


def load_lb_inventory(path: str) -> list[LbHost]:
    """Hosts of a pyinfra inventory file, with group data merged (host data wins), in file order."""
    hosts = side_hosts(path)
    if not hosts:
        raise ConfigError(path, "", "defines no load balancer host")
    return [LbHost(name, data) for name, data in hosts.items()]
