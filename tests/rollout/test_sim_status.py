"""``ms4fleet status --json`` on a simulated 3-host fleet serving release A: every replica's load in the JSON
equals its /metrics read directly over the fleet network (the core's parser), and GPU memory and health are
each host's."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ms4fleet import metrics
from ms4fleet_pyinfra.rollout.cli import register_rollout, register_status
from tests.rollout.world import World, container_ip, world

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ms4fleet")
    sub = parser.add_subparsers(dest="command", required=True)
    register_rollout(sub)
    register_status(sub)
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
        direct = metrics.ReplicaLoad.from_text(httpx.get(f"{url}/metrics", timeout=10).text).to_dict()
        shown = rows[name]["load"][str(port)]
        assert {k: shown[k] for k in direct} == direct, (name, port)
        assert shown["tokens_per_s"] == 0.0  # idle between the two reads
        assert direct["generation_tokens"] > 0
        seen.add(direct["generation_tokens"])
    assert len(seen) > 3, "the replicas' counters should differ"
    for row in rows.values():
        assert row["healthy"] and row["up_to_date"] and row["error"] == ""
        assert [g["index"] for g in row["gpus"]] == [0, 1]
        for gpu in row["gpus"]:
            assert gpu["health"] == "healthy"
            assert 0 < gpu["memory_used_bytes"] < gpu["memory_total_bytes"]
