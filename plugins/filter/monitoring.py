"""Filters for ``roles/monitoring``: the core's monitoring plan (``ms4fleet.monitoring``), nothing decided here.

+ ``gpu_hostvars | ms4fleet.fleet.monitoring_plan(inventory_hostname)``: packages, service, port and the
  files (path -> text) Prometheus runs with on this monitoring host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.requirement import core_filters


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return core_filters("monitoring_filters", ("monitoring_plan",))
