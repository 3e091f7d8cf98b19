"""A simulated 3-host fleet serving release A, seen from outside:

- ``ms4fleet status --json``: every replica's load equals its /metrics read directly over the fleet network
  (the core's parser), and GPU memory and health are each host's;
- ``ms4fleet monitoring``: Debian's prometheus (from the sim's offline Debian mirror) on the fleet's fourth
  host scrapes every replica (``up == 1``, asked through Prometheus's HTTP API), a stopped replica fires
  Ms4fleetReplicaDown within two scrape intervals, and every metric the dashboard reads exists there;
- playbooks/monitoring.yml (the Ansible role) writes the same files, byte for byte, then changes nothing.
"""

from __future__ import annotations

import argparse
import json
import runpy
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ms4fleet import metrics, monitoring
from ms4fleet.config import metrics_port
from ms4fleet.health import parse_health
from ms4fleet.hostscripts import python_command
from ms4fleet.probe import parse_probe
from ms4fleet_pyinfra.monitoring import register_monitoring
from ms4fleet_pyinfra.rollout.cli import register_rollout, register_status
from ms4fleet_sim.inventories import py_literal
from tests.rollout.world import World, container_ip, world
from tests.unit.test_monitoring import dashboard_exprs, metric_names

SCRAPE_S = 5

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ms4fleet")
    sub = parser.add_subparsers(dest="command", required=True)
    register_rollout(sub)
    register_status(sub)
    register_monitoring(sub)
    args = parser.parse_args(list(argv))
    result: int = args.func(args)
    return result


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, Path]]:
    from ms4fleet_sim import dockercli

    if not dockercli.daemon_ok():
        pytest.fail("the sim needs a running dockerd: run scripts/ensure-docker.sh first")
    root = tmp_path_factory.mktemp("status-world")
    with world(root, "status", gpu_hosts=3) as built:
        inventory = built.inventory("release-a")
        assert cli("rollout", str(inventory), "--report-dir", str(root / "report")) == 0
        yield built, inventory


def test_status_json_equals_each_replicas_metrics(
    served: tuple[World, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    built, inventory = served
    urls = {}
    for number, host in enumerate(built.gpu):
        address = container_ip(host.container, built.sim.record.network)
        for port in (8000, 8001):
            url = urls[(host.name, port)] = f"http://{address}:{port}"
            # Different traffic per replica, so a value read from the wrong replica shows.
            for _ in range(number + (port - 8000) * 3 + 1):
                body = {"model": "mistral-small-4", "prompt": "hello " * (port - 7990), "max_tokens": 4 + number}
                assert httpx.post(f"{url}/v1/completions", json=body, timeout=60).status_code == 200
    capsys.readouterr()
    assert cli("status", str(inventory), "--json", "--interval-s", "0.5") == 0
    rows = {row["host"]: row for row in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == sorted(h.name for h in built.gpu)
    seen = set()
    for (name, port), url in urls.items():
        # /metrics is the host proxy's metrics listener's (the world allows the fleet's network there).
        scrape = f"{url.rsplit(':', 1)[0]}:{metrics_port(port)}/metrics"
        direct = metrics.ReplicaLoad.from_text(httpx.get(scrape, timeout=10).text).to_dict()
        shown = rows[name]["load"][str(port)]
        assert {k: shown[k] for k in direct} == direct, (name, port)
        assert shown["tokens_per_s"] == 0.0  # idle between the two reads
        assert direct["generation_tokens"] > 0
        seen.add(direct["generation_tokens"])
    assert len(seen) > 3, "the replicas' counters should differ"
    for host in built.gpu:
        row = rows[host.name]
        assert row["healthy"] and row["up_to_date"] and row["error"] == ""
        # GPU memory and health as the core's probe and health reader say, run on the host directly.
        probe = parse_probe(host.sudo(python_command("probe.py")).stdout, host.name)
        health = parse_health(host.sudo(python_command("health.py")).stdout, host.name)
        memory = [(g.index, g.memory_used_bytes, g.memory_total_bytes) for g in probe.gpus]
        assert [(g["index"], g["memory_used_bytes"], g["memory_total_bytes"]) for g in row["gpus"]] == memory
        assert all(0 < used < total for _, used, total in memory)
        verdicts = [(g.index, str(g.verdict), g.summary) for g in health.gpus]
        assert [(g["index"], g["health"], g["health_reason"]) for g in row["gpus"]] == verdicts
        print(host.name, verdicts)


def prometheus_api(url: str, path: str, **params: str) -> object:
    body = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]


def wait_for(what: str, check: object, timeout_s: float, every_s: float = 0.25) -> float:
    """Seconds until ``check()`` is true (fails after ``timeout_s``)."""
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < timeout_s, f"{what}: not within {timeout_s:g}s"
        time.sleep(every_s)
    return time.monotonic() - start


def test_prometheus_scrapes_every_replica_and_alerts_on_a_stopped_one(served: tuple[World, Path]) -> None:
    built, inventory = served
    gpus, shared = runpy.run_path(str(inventory))["gpus"]
    shared["ms4fleet_monitoring"] = {"prometheus_host": built.lb.name, "scrape_interval_s": SCRAPE_S}
    monitored = inventory.with_name("monitored.py")
    monitored.write_text(f"gpus = {py_literal((gpus, shared))}\n", encoding="utf-8")
    assert cli("monitoring", str(monitored), "--monitoring-inventory", str(built.lb_inventory())) == 0
    # The same plan again changes nothing and keeps Prometheus up.
    assert cli("monitoring", str(monitored), "--monitoring-inventory", str(built.lb_inventory())) == 0
    assert built.lb.sudo("dpkg-query -W -f '${Version}' prometheus").stdout.startswith("2.")
    url = f"http://{container_ip(built.lb.container, built.sim.record.network)}:{monitoring.PROMETHEUS_PORT}"
    wait_for("Prometheus answers", lambda: _ready(url), 60)
    replicas = {(h.name, str(i)) for h in built.gpu for i in (0, 1)}

    def up() -> dict[tuple[str, str], str]:
        result = prometheus_api(url, "query", query='up{job="vllm"}')["result"]  # type: ignore[index]
        return {(r["metric"]["host"], r["metric"]["replica"]): r["value"][1] for r in result}

    wait_for("every replica up == 1", lambda: up() == dict.fromkeys(replicas, "1"), 60)

    victim = built.gpu[1]
    victim.sudo("systemctl stop ms4fleet-vllm-1.service")
    stopped = time.monotonic()

    def firing() -> bool:
        alerts = prometheus_api(url, "alerts")["alerts"]  # type: ignore[index]
        return any(
            a["labels"]["alertname"] == "Ms4fleetReplicaDown"
            and a["state"] == "firing"
            and (a["labels"]["host"], a["labels"]["replica"]) == (victim.name, "1")
            for a in alerts
        )

    wait_for("Ms4fleetReplicaDown fires", firing, 4 * SCRAPE_S)
    took = time.monotonic() - stopped
    print(f"replica-down alert fired {took:.1f}s after the stop (scrape interval {SCRAPE_S}s)")
    assert took <= 2 * SCRAPE_S
    assert up()[(victim.name, "1")] == "0"

    # Every metric the dashboard reads exists in this Prometheus (recording rules run each evaluation).
    wanted = set().union(*(metric_names(e) for e in dashboard_exprs()))

    def names() -> set[str]:
        return set(prometheus_api(url, "label/__name__/values"))  # type: ignore[call-overload]

    wait_for(f"the dashboard's metrics {sorted(wanted)}", lambda: wanted <= names(), 4 * SCRAPE_S)
    victim.sudo("systemctl start ms4fleet-vllm-1.service")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_ansible_role_writes_the_same_files(served: tuple[World, Path]) -> None:
    built, inventory = served
    paths = [
        monitoring.CONFIG_PATH,
        monitoring.RULES_PATH,
        *(f"{monitoring.TARGETS_DIR}/{j}.json" for j in monitoring.JOBS),
    ]
    written = {path: built.lb.sudo(f"cat {path}").stdout for path in paths}
    built.lb.sudo("rm -f " + " ".join(paths))
    doc = json.loads(built.ansible_inventory("monitored").read_text())
    doc["all"]["children"]["ms4fleet_gpu"]["vars"]["ms4fleet_monitoring"] = {
        "prometheus_host": built.lb.name,
        "scrape_interval_s": SCRAPE_S,
    }
    ansible_inventory = inventory.with_name("monitored-ansible.yml")
    ansible_inventory.write_text(json.dumps(doc), encoding="utf-8")
    for attempt in ("first", "again"):
        run = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(ansible_inventory),
             "playbooks/monitoring.yml", "-e", "monitoring_group=ms4fleet_lb"],
            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        recap = next(line for line in run.stdout.splitlines() if line.startswith(built.lb.name))
        assert ("changed=0" in recap) == (attempt == "again"), recap
    assert {path: built.lb.sudo(f"cat {path}").stdout for path in paths} == written
    assert built.lb.sudo("systemctl is-active prometheus").stdout.strip() == "active"
