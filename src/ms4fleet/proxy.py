"""The nginx text in front of vLLM, rendered here only: the host proxy of each GPU host and the parts the load
balancer's config shares with it (which routes pass, who may read /metrics).

vLLM checks ``--api-key`` only under /v1 (and /v2, /inference, /cohere): every other route it serves
(/invocations runs a chat completion, /tokenize, /pooling, /score, /metrics, /docs, ...) answers anyone who
reaches its port. So vLLM binds 127.0.0.1 on an internal port (``config.internal_port``), and Debian's nginx
on the host listens where clients connect:

- ``bind_address:port``: ``/v1/`` and ``/health`` to vLLM (which still checks the key: the proxy never holds
  it); any other path answers 404;
- ``bind_address:metrics_port`` (``config.metrics_port``): ``/metrics`` only, for loopback and the
  networks of ``serving.metrics_allow`` (Prometheus, the load balancer); 403 for anyone else.

+ ``host_proxy_conf(config, ports)``: the whole of ``PROXY_CONF`` for the replicas on ``ports``.
+ ``api_locations(upstream, read_timeout_s, retry=())``: the ``location`` blocks that pass the API and
  refuse the rest (the load balancer's server uses them too).
+ ``allow_lines(networks)``: ``allow`` each network, ``deny all``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ms4fleet.config import LOOPBACK_NETWORKS, HostConfig, internal_port, metrics_port
from ms4fleet.paths import HEADER

PROXY_CONF = "/etc/nginx/conf.d/ms4fleet-proxy.conf"
PROXY_SERVICE = "nginx"
# After the proxy's file changed: reload nginx gracefully where it runs (the service itself is started by the
# engine after its package is in; a reload never drops a request in flight, a restart would).
RELOAD_COMMAND = ("/bin/sh", "-c", f"! systemctl is-active --quiet {PROXY_SERVICE} || systemctl reload {PROXY_SERVICE}")
# The only routes a client may reach: the OpenAI API and the health check the load balancer and clients use.
API_PREFIX = "/v1"
HEALTH_PATH = "/health"
# Long generations stream for minutes; nginx's 60 s default would cut them.
READ_TIMEOUT_S = 900


def _listen(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def allow_lines(networks: Sequence[str], indent: str = "        ") -> list[str]:
    """nginx access rules: each (validated, canonical CIDR) network allowed, everyone else refused (403)."""
    return [*(f"{indent}allow {network};" for network in networks), f"{indent}deny all;"]


def _pass(upstream: str, read_timeout_s: int, indent: str) -> list[str]:
    return [
        f"{indent}proxy_pass http://{upstream};",
        f"{indent}proxy_http_version 1.1;",
        f'{indent}proxy_set_header Connection "";',
        f"{indent}proxy_set_header Host $host;",
        # Server-sent events (stream=true) must reach the client token by token.
        f"{indent}proxy_buffering off;",
        f"{indent}proxy_read_timeout {read_timeout_s}s;",
        f"{indent}proxy_send_timeout {read_timeout_s}s;",
    ]


def api_locations(upstream: str, read_timeout_s: int = READ_TIMEOUT_S, retry: Sequence[str] = ()) -> list[str]:
    """The ``location`` blocks of a server that exposes vLLM: the API prefix and the health check pass to
    ``upstream`` (``retry``: extra directives for each), every other path is 404. nginx matches the
    normalised path (``/v1/../invocations`` is ``/invocations``), so no spelling reaches another route."""
    lines = []
    for match in (f"{API_PREFIX}/", f"= {HEALTH_PATH}"):
        lines += [f"    location {match} {{", *_pass(upstream, read_timeout_s, "        ")]
        lines += [f"        {directive}" for directive in retry]
        lines.append("    }")
    return [*lines, "    location / {", "        return 404;", "    }"]


def metrics_networks(config: HostConfig) -> list[str]:
    """Who may read a replica's /metrics: loopback, then the inventory's ``serving.metrics_allow``."""
    return list(dict.fromkeys([*LOOPBACK_NETWORKS, *config.serving.metrics_allow]))


def host_proxy_conf(config: HostConfig, ports: Sequence[int]) -> str:
    """The host proxy's whole config for replicas whose APIs answer on ``ports``."""
    bind = config.serving.bind_address
    lines = [
        HEADER.rstrip("\n"),
        "# The host proxy: each vLLM replica listens on 127.0.0.1 only; clients reach its OpenAI API (/v1/) and",
        "# /health here, Prometheus and the load balancer its /metrics on the metrics port; nothing else.",
    ]
    for port in ports:
        upstream = f"127.0.0.1:{internal_port(port)}"
        lines += [
            "",
            "server {",
            f"    listen {_listen(bind, port)};",
            "    client_max_body_size 64m;",
            *api_locations(upstream),
            "}",
            "",
            "server {",
            f"    listen {_listen(bind, metrics_port(port))};",
            "    location = /metrics {",
            *allow_lines(metrics_networks(config)),
            f"        proxy_pass http://{upstream};",
            "    }",
            "    location / {",
            "        return 404;",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"
