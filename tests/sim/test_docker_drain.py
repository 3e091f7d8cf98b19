"""A Docker-mode replica under its production unit on a sim host (systemd as PID 1, a nested dockerd):
restarting Docker leaves the replica's container serving (live-restore, and the unit re-adopts it), and
stopping the unit lets a request in flight finish (vLLM's drain, ``--shutdown-timeout``).

One host of its own (fleet ``drain``): the 580 driver loaded, docker.io and the container toolkit, the
stand-in image, daemon.json from the core, the weights copied in, the unit from the host's plan."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ms4fleet.config import HostConfig
from ms4fleet.provision import DAEMON_JSON, daemon_json
from ms4fleet.serving import Replica, plan_host
from ms4fleet_sim import faults, weights_mirror
from tests.support.simhosts import (
    SimHost,
    install_docker,
    load_standin,
    propagate_faults,
    provision_driver,
    put_files,
    running,
)

pytestmark = [pytest.mark.sim, pytest.mark.slow]

CODES = "/tmp/drain-codes"
LOAD, ONE = "/tmp/drain-load.sh", "/tmp/drain-one.sh"
CHAT = '{"model":"mistral-small-4","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'


def _request(port: int, out: str, max_time: int = 20) -> str:
    return (
        f"curl -s -o {out} -w '%{{http_code}}\\n' --max-time {max_time} -H 'content-type: application/json'"
        f" -d '{CHAT}' http://127.0.0.1:{port}/v1/chat/completions"
    )


def _load_script(port: int) -> str:
    return f"while [ ! -e {CODES}.stop ]; do {_request(port, '/dev/null')} >> {CODES}; sleep 0.2; done\n"


def _one_request(port: int) -> str:
    return f"{_request(port, CODES + '.body', 60)} > {CODES}\n"


@dataclass
class Served:
    host: SimHost
    replica: Replica


def _put(host: SimHost, files: dict[str, bytes]) -> None:
    put_files(host, {path: (blob, 0o644) for path, blob in files.items()})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("drain")
    with running(root / "project", name="drain", specs=("h200x2",)) as sim:
        host = sim[sim.fleet.host_name(1)]
        provision_driver(host)
        install_docker(host)
        load_standin(host)
        config = HostConfig.from_host_data(
            "drain-1",
            {
                "ms4fleet_gpu": {"kind": "h200-sxm", "count": 2},
                # Open: the test's requests carry no key.
                "ms4fleet_serving": {"tensor_parallel_size": 1, "max_model_len": 32768, "open_endpoint": True},
            },
        )
        plan = plan_host(config)
        replica = plan.replicas[0]
        current = host.sudo(f"cat {DAEMON_JSON} 2>/dev/null || true").stdout
        tree = weights_mirror.build_tree(root / "mirror")
        files = {f"{plan.model_dir}/{p.relative_to(tree)}": p.read_bytes() for p in tree.rglob("*") if p.is_file()}
        files[DAEMON_JSON] = daemon_json(current, config).encode()
        files[f"/etc/systemd/system/{replica.unit_name}"] = replica.unit_text.encode()
        _put(host, files)
        host.sudo("systemctl restart docker && systemctl daemon-reload")
        host.sudo(f"systemctl start {replica.unit_name}", timeout=300)
        yield Served(host, replica)


def _container(host: SimHost, name: str) -> str:
    return host.sudo(f"docker inspect --format '{{{{.Id}}}} {{{{.State.StartedAt}}}}' {name}").stdout.strip()


def test_docker_restart_keeps_the_replica_serving(served: Served) -> None:
    host, replica = served.host, served.replica
    assert json.loads(host.sudo(f"cat {DAEMON_JSON}").stdout)["live-restore"] is True
    before = _container(host, replica.container_name)
    # Load sampled every 0.2 s from the host itself, each request with its HTTP status on a line.
    _put(host, {LOAD: _load_script(replica.internal_port).encode()})
    host.sudo(f"rm -f {CODES} {CODES}.stop; nohup sh {LOAD} >/dev/null 2>&1 &")
    time.sleep(2)
    host.sudo("systemctl restart docker")
    # Past the unit's RestartSec: its `docker run` client died with dockerd, the unit restarts and re-attaches.
    time.sleep(15)
    deadline = time.monotonic() + 60
    while host.sudo(f"systemctl is-active {replica.unit_name}", check=False).stdout.strip() != "active":
        assert time.monotonic() < deadline, host.sudo(f"systemctl status {replica.unit_name}", check=False).stdout
        time.sleep(0.5)
    host.sudo(f"touch {CODES}.stop; sleep 1")
    codes = host.sudo(f"cat {CODES}; rm -f {CODES} {CODES}.stop").stdout.split()
    restarts = host.sudo(f"systemctl show -p NRestarts --value {replica.unit_name}").stdout.strip()
    print(f"{len(codes)} requests during the Docker restart, unit restarts: {restarts}")
    assert len(codes) >= 40, codes
    assert set(codes) == {"200"}, codes
    assert _container(host, replica.container_name) == before
    assert host.sudo(f"systemctl is-active {replica.unit_name}").stdout.strip() == "active"


def test_stopping_the_unit_lets_the_request_in_flight_finish(served: Served) -> None:
    host, replica = served.host, served.replica
    switches = {"decode_delay_ms": 800}
    faults.write(host.container, switches)
    propagate_faults(host, switches)
    try:
        url = f"http://127.0.0.1:{replica.internal_port}"
        _put(host, {ONE: _one_request(replica.internal_port).encode()})
        host.sudo(f"rm -f {CODES}; nohup sh {ONE} >/dev/null 2>&1 &")
        deadline = time.monotonic() + 20
        while (
            "vllm:num_requests_running"
            not in (metrics := host.run(f"curl -s {url}/metrics | grep '^vllm:num_requests_running' || true").stdout)
            or float(metrics.split()[-1]) < 1
        ):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.2)
        started = time.monotonic()
        host.sudo(f"systemctl stop {replica.unit_name}", timeout=120)
        print(f"stop took {time.monotonic() - started:.1f}s with one request in flight")
        time.sleep(0.5)
        assert host.sudo(f"cat {CODES}").stdout.strip() == "200"
        answer = json.loads(host.sudo(f"cat {CODES}.body").stdout)
        assert answer["choices"][0]["finish_reason"] in {"stop", "length"}
        assert host.sudo(f"docker ps -q --filter name={replica.container_name}").stdout.strip() == ""
    finally:
        faults.write(host.container, {})
        host.sudo(f"rm -f {CODES} {CODES}.body {ONE} {LOAD}", check=False)
