"""ms4fleet.monitoring: the Prometheus plan from the desired state (targets, prometheus.yml), the shipped rules
(checked by Debian's promtool) and dashboard, and the one-line errors of a bad ``ms4fleet_monitoring``."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ms4fleet import monitoring
from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.inventory import HostSpec
from ms4fleet.serving import plan_host
from tests.support.promtool import promtool

GPU = {"kind": "h200-sxm", "count": 8}


def spec(name: str, address: str | None = None, **mon: Any) -> HostSpec:
    data: dict[str, Any] = {"ms4fleet_gpu": GPU, "ms4fleet_serving": {"bind_address": "0.0.0.0"}}
    if mon:
        data["ms4fleet_monitoring"] = mon
    if address:
        data["lb_backend_address"] = address
    return HostSpec(name, (), HostConfig.from_host_data(name, data), {"hostname": f"{name}.ssh"}, data)


def plan_for(*specs: HostSpec) -> dict[str, monitoring.MonitoringPlan]:
    return monitoring.fleet_monitoring(specs, {s.name: plan_host(s.config) for s in specs})


def test_targets_come_from_each_hosts_replicas() -> None:
    plans = plan_for(
        spec("gpu-1", "10.0.0.1", prometheus_host="mon-1", node_exporter=True),
        spec("gpu-2", prometheus_host="mon-1", dcgm_exporter=True),
        spec("gpu-3"),
    )
    assert list(plans) == ["mon-1"]
    plan = plans["mon-1"]
    assert plan.packages == ("prometheus",) and plan.scraped == ("gpu-1", "gpu-2")
    vllm = json.loads(plan.files[f"{monitoring.TARGETS_DIR}/vllm.json"])
    # 8 x H200 serve 4 replicas of TP=2 on ports 8000-8003 (ms4fleet.serving); the host proxy answers their
    # /metrics on 18000-18003.
    assert [(g["labels"]["host"], g["targets"]) for g in vllm] == [
        *(("gpu-1", [f"10.0.0.1:{18000 + i}"]) for i in range(4)),
        *(("gpu-2", [f"gpu-2.ssh:{18000 + i}"]) for i in range(4)),
    ]
    assert vllm[1]["labels"] == {"host": "gpu-1", "replica": "1", "unit": "ms4fleet-vllm-1.service"}
    node = json.loads(plan.files[f"{monitoring.TARGETS_DIR}/node.json"])
    dcgm = json.loads(plan.files[f"{monitoring.TARGETS_DIR}/dcgm.json"])
    assert node == [{"labels": {"host": "gpu-1"}, "targets": ["10.0.0.1:9100"]}]
    assert dcgm == [{"labels": {"host": "gpu-2"}, "targets": ["gpu-2.ssh:9400"]}]
    config = yaml.safe_load(plan.files[monitoring.CONFIG_PATH])
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == [monitoring.RULES_PATH]
    assert plan.files[monitoring.RULES_PATH] == monitoring.rules_text()


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        (lambda: [spec("g", prometheus_host="mon 1; rm -rf /")], "g: monitoring.prometheus_host"),
        (lambda: [spec("g", prometheus_host="m", scrape_interval_s=1)], "g: monitoring.scrape_interval_s"),
        (lambda: [spec("g", prometheus_host="m", scrape_interval_s="15")], "g: monitoring.scrape_interval_s"),
        (lambda: [spec("g", prometheus_host="m", grafana=True)], "g: monitoring.grafana"),
        (lambda: [spec("g", scrape_interval_s=15)], "g: monitoring.prometheus_host"),
        (
            lambda: [spec("a", prometheus_host="m"), spec("b", prometheus_host="m", scrape_interval_s=30)],
            "b: monitoring.scrape_interval_s=30 differs from a's 15 for the same Prometheus m",
        ),
        (lambda: [spec("g", "10.0.0.1/24", prometheus_host="m")], "g: lb_backend_address is not a host name"),
    ],
)
def test_bad_monitoring_is_one_line(hosts: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        plan_for(*hosts())
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text


def test_promtool_accepts_the_rules_and_the_config(tmp_path: Path) -> None:
    tool = promtool()
    rules = tmp_path / "rules.yml"
    rules.write_bytes(monitoring.rules_text())
    done = subprocess.run([tool, "check", "rules", rules], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 14 rules found" in done.stdout
    plan = plan_for(spec("gpu-1", "10.0.0.1", prometheus_host="mon-1", node_exporter=True))["mon-1"]
    for path, data in plan.files.items():
        local = tmp_path / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data.replace(b"/etc/prometheus", str(tmp_path / "etc/prometheus").encode()))
    config = tmp_path / monitoring.CONFIG_PATH.lstrip("/")
    done = subprocess.run([tool, "check", "config", config], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_rule_fails_promtool(tmp_path: Path) -> None:
    """The check above can fail: promtool refuses a rule with a bad expression."""
    rules = tmp_path / "rules.yml"
    rules.write_bytes(monitoring.rules_text().replace(b"== 0", b"== =", 1))
    done = subprocess.run([promtool(), "check", "rules", rules], capture_output=True, text=True, check=False)
    assert done.returncode != 0


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(monitoring.dashboard_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    return exprs


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers not followed by '(' and outside label matchers/strings."""
    # Strings, label matchers, ranges, grouping clauses and label_values's label argument name no metric.
    bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)|,\s*\w+\s*\)', " ", expr)
    words = {
        m.group()
        for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", bare)
        if not bare[m.end() :].lstrip().startswith("(")
    }
    return words - {"or", "and", "unless"}


def recorded() -> set[str]:
    groups = yaml.safe_load(monitoring.rules_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_dashboard_is_importable_and_reads_what_is_recorded() -> None:
    dashboard = json.loads(monitoring.dashboard_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {"${DS_PROMETHEUS}"}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    names = set().union(*(metric_names(e) for e in dashboard_exprs()))
    # Beyond the recorded series: only Prometheus's own (up, ALERTS), present wherever it scrapes.
    assert names - recorded() == {"up", "ALERTS"}


def test_metric_names_reads_promql() -> None:
    expr = 'histogram_quantile(0.95, sum by (host, le) (rate(vllm:ttft_bucket{host=~"$host"}[5m]))) or up == 0'
    assert metric_names(expr) == {"vllm:ttft_bucket", "up"}
    assert metric_names('label_values(up{job="vllm"}, host)') == {"up"}
