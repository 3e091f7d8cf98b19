"""The function behind ``plugins/filter/monitoring.py`` (imported only once ``requirement`` is met): the core's
monitoring plan (``ms4fleet.monitoring``) for one monitoring host, from every GPU host's variables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import (
    core,  # noqa: F401 (before the core)
    hostplan,
)

from ms4fleet import monitoring
from ms4fleet.config import ConfigError
from ms4fleet.inventory import HostSpec
from ms4fleet.serving import plan_host


def monitoring_plan(gpu_hostvars: Sequence[Mapping[str, Any]], host: str) -> dict[str, Any]:
    specs = []
    for variables in gpu_hostvars:
        name = str(variables["inventory_hostname"])
        connection = {"hostname": variables["ansible_host"]} if variables.get("ansible_host") else {}
        specs.append(HostSpec(name, (), hostplan.host_config(variables, name), connection, variables))
    plans = monitoring.fleet_monitoring(specs, {spec.name: plan_host(spec.config) for spec in specs})
    if host not in plans:
        named = sorted(plans) or ["none"]
        raise ConfigError(host, "monitoring", f"no GPU host names it as prometheus_host (they name {', '.join(named)})")
    return plans[host].to_json()
