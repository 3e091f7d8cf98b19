"""Fleet monitoring, decided once for both engines: Debian's Prometheus on a monitoring host named in the
inventory, scraping every replica's /metrics (and node / DCGM exporters where a host has them).

Each GPU host's ``ms4fleet_monitoring`` (``config.MonitoringConfig``, validated with the rest of the inventory)
names its Prometheus host, the scrape interval and its exporters.

+ ``fleet_monitoring(specs, plans)``: one ``MonitoringPlan`` per monitoring host: packages, the service, and
  the bytes of prometheus.yml, the rules and the file-based service discovery targets (from each host's
  desired state: its planned replicas' metrics ports at the address the fleet reaches it; the host proxy
  answers there only to ``serving.metrics_allow``, which must hold the Prometheus host's address).
+ ``rules_text()`` / ``dashboard_text()``: the shipped ``rules.yml`` (recording + alert rules) and the
  Grafana dashboard ``dashboard.json`` (importable as is), package data of ``ms4fleet``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ms4fleet.config import ConfigError
from ms4fleet.inventory import HostSpec
from ms4fleet.provision import APT_LOCK_TIMEOUT_S
from ms4fleet.rollout import lb
from ms4fleet.serving import ServingPlan

PACKAGES = ("prometheus",)
SERVICE = "prometheus"
CONFIG_PATH = "/etc/prometheus/prometheus.yml"
DIR = "/etc/prometheus/ms4fleet"
RULES_PATH = f"{DIR}/rules.yml"
TARGETS_DIR = f"{DIR}/targets"
PROMETHEUS_PORT = 9090
# The exporters' registered default ports (prometheus-node-exporter, NVIDIA's dcgm-exporter).
NODE_EXPORTER_PORT = 9100
DCGM_EXPORTER_PORT = 9400
JOBS = ("vllm", "node", "dcgm")


@dataclass(frozen=True)
class MonitoringPlan:
    """What the monitoring host ``host`` runs: Debian's prometheus, these files, restarted when they change."""

    host: str
    packages: tuple[str, ...]
    service: str
    port: int
    scrape_interval_s: int
    files: Mapping[str, bytes]
    scraped: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "packages": list(self.packages),
            "apt_lock_timeout": APT_LOCK_TIMEOUT_S,
            "service": self.service,
            "port": self.port,
            "config_path": CONFIG_PATH,
            "scrape_interval_s": self.scrape_interval_s,
            "scraped": list(self.scraped),
            "files": {path: data.decode() for path, data in sorted(self.files.items())},
        }


def _resource(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def rules_text() -> bytes:
    return _resource("rules.yml")


def dashboard_text() -> bytes:
    return _resource("dashboard.json")


# A host name, IPv4 or IPv6 address: what Prometheus accepts before the port in a target.
_ADDRESS = re.compile(r"\A(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|[0-9A-Fa-f:.]{2,45})\Z")


def _address(spec: HostSpec) -> str:
    # Prometheus reaches the replicas where the load balancer does.
    address = lb.backend_address(spec.name, spec.data, spec.connection.get("hostname"))
    if not _ADDRESS.match(address):
        raise ConfigError(
            spec.name, lb.ADDRESS_KEY, "is not a host name or IP address Prometheus can scrape: set lb_backend_address"
        )
    return address


def _target(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _targets(groups: list[dict[str, Any]]) -> bytes:
    return (json.dumps(groups, indent=2, sort_keys=True) + "\n").encode()


def prometheus_yml(interval_s: int) -> bytes:
    jobs = "".join(
        f"  - job_name: {job}\n"
        f"    file_sd_configs:\n"
        f"      - files: ['{TARGETS_DIR}/{job}.json']\n"
        # The targets change with the desired state; Prometheus rereads them without a restart.
        f"        refresh_interval: 30s\n"
        for job in JOBS
    )
    return (
        "# Managed by ms4fleet (ms4fleet.monitoring): rewritten from the fleet's desired state.\n"
        "global:\n"
        f"  scrape_interval: {interval_s}s\n"
        f"  evaluation_interval: {interval_s}s\n"
        f"  scrape_timeout: {min(10, interval_s)}s\n"
        "rule_files:\n"
        f"  - {RULES_PATH}\n"
        "scrape_configs:\n" + jobs
    ).encode()


def fleet_monitoring(specs: Sequence[HostSpec], plans: Mapping[str, ServingPlan]) -> dict[str, MonitoringPlan]:
    """Per monitoring host, its plan; ``ConfigError`` (one line) when hosts disagree on its scrape interval."""
    chosen: dict[str, tuple[int, str]] = {}
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    scraped: dict[str, list[str]] = {}
    for spec in specs:
        settings = spec.config.monitoring
        if settings is None:
            continue
        mon = settings.prometheus_host
        interval, first = chosen.setdefault(mon, (settings.scrape_interval_s, spec.name))
        if interval != settings.scrape_interval_s:
            raise ConfigError(
                spec.name,
                "monitoring.scrape_interval_s",
                f"={settings.scrape_interval_s} differs from {first}'s {interval} for the same Prometheus "
                f"{mon}: set it once (on the group)",
            )
        jobs = groups.setdefault(mon, {job: [] for job in JOBS})
        scraped.setdefault(mon, []).append(spec.name)
        address = _address(spec)
        for replica in plans[spec.name].replicas:
            labels = {"host": spec.name, "replica": str(replica.index), "unit": replica.unit_name}
            # The host proxy's /metrics listener: it answers only the networks of serving.metrics_allow.
            jobs["vllm"].append({"targets": [_target(address, replica.metrics_port)], "labels": labels})
        if settings.node_exporter:
            jobs["node"].append({"targets": [_target(address, NODE_EXPORTER_PORT)], "labels": {"host": spec.name}})
        if settings.dcgm_exporter:
            jobs["dcgm"].append({"targets": [_target(address, DCGM_EXPORTER_PORT)], "labels": {"host": spec.name}})
    out = {}
    for mon, (interval, _) in chosen.items():
        files = {CONFIG_PATH: prometheus_yml(interval), RULES_PATH: rules_text()}
        files.update({f"{TARGETS_DIR}/{job}.json": _targets(found) for job, found in groups[mon].items()})
        out[mon] = MonitoringPlan(mon, PACKAGES, SERVICE, PROMETHEUS_PORT, interval, files, tuple(scraped[mon]))
    return out
