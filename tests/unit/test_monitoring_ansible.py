"""The collection's monitoring_plan filter returns the core's plan (the one ``ms4fleet monitoring`` applies with
pyinfra), and a monitoring host no GPU host names is one line."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ms4fleet import monitoring
from tests.unit.test_monitoring import plan_for, spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def filters() -> SimpleNamespace:
    sys.path.insert(0, str(ROOT / "playbooks" / "collections"))
    plugin = importlib.import_module("ansible_collections.ms4fleet.fleet.plugins.filter.monitoring")
    return SimpleNamespace(**plugin.FilterModule().filters())


def hostvars(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "inventory_hostname": name,
        "ansible_host": f"{name}.ssh",
        "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
        "ms4fleet_serving": {"bind_address": "0.0.0.0"},
        "ms4fleet_monitoring": {"prometheus_host": "mon-1", "node_exporter": True},
        **extra,
    }


def test_the_filter_is_the_cores_plan(filters: SimpleNamespace) -> None:
    got = filters.monitoring_plan([hostvars("gpu-1", lb_backend_address="10.0.0.1"), hostvars("gpu-2")], "mon-1")
    core = plan_for(
        spec("gpu-1", "10.0.0.1", prometheus_host="mon-1", node_exporter=True),
        spec("gpu-2", prometheus_host="mon-1", node_exporter=True),
    )["mon-1"]
    assert got == core.to_json()
    assert got["files"][monitoring.RULES_PATH] == monitoring.rules_text().decode()


def test_an_unnamed_monitoring_host_is_one_line(filters: SimpleNamespace) -> None:
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match=r"^mon-2: monitoring no GPU host names it as prometheus_host"):
        filters.monitoring_plan([hostvars("gpu-1")], "mon-2")


def test_the_collection_ships_the_packages_dashboard() -> None:
    """Grafana imports the file from either artefact: the collection's copy is the package's, byte for byte."""
    shipped = ROOT / "roles" / "monitoring" / "files" / "ms4fleet-dashboard.json"
    assert not shipped.is_symlink() and shipped.read_bytes() == monitoring.dashboard_text()
