"""Real Docker nested in a sim host, with the simulated container toolkit: the production unit's GPU flags,
GPU memory accounting across containers, and the vLLM stand-in passing and failing verification."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from ms4fleet.config import HostConfig
from ms4fleet.serving import plan_host
from ms4fleet.verify import verify
from ms4fleet_sim import dockercli, inventories
from tests.support.simhosts import SimFleet, SimHost

pytestmark = pytest.mark.sim

IMAGE = inventories.STANDIN_IMAGE
TINY = "/srv/models/tiny"
TINY_CONFIG = {
    "architectures": ["MistralForCausalLM"],
    "hidden_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "max_position_embeddings": 4096,
}
# The flags serving renders into the unit's `docker run` (ms4fleet.serving), minus the per-replica values.
PRODUCTION_FLAGS = "--ipc=host --ulimit memlock=-1 --ulimit stack=67108864"
SetFaults = Callable[..., None]
VERIFY_CHECKS = ("health", "models", "completion", "streaming", "metrics")


@pytest.fixture(scope="module")
def host(docker_hgx: SimHost) -> SimHost:
    docker_hgx.sudo(
        f"mkdir -p {TINY} && printf %s {shlex.quote(json.dumps(TINY_CONFIG))} > {TINY}/config.json"
        f" && truncate -s 1G {TINY}/model.safetensors"
    )
    return docker_hgx


def gpus_json(host: SimHost, gpu_flags: str, env: str = "") -> list[dict[str, object]]:
    out = host.sudo(f"docker run --rm {gpu_flags} {env} --entrypoint cat {IMAGE} /run/nvidia-sim/gpus.json").stdout
    views: list[dict[str, object]] = json.loads(out)
    return views


def stand_in(name: str, devices: str, port: int, bind: str = "127.0.0.1", args: str = "", detach: bool = True) -> str:
    """The `docker run` line of a production unit, serving the tiny model."""
    return (
        f"docker run {'-d ' if detach else ''}--rm --name {name} --gpus '\"device={devices}\"' {PRODUCTION_FLAGS} "
        f"-p {bind}:{port}:{port} -v {TINY}:/models:ro {IMAGE} /models --served-model-name tiny "
        f"--host 0.0.0.0 --port {port} {args}"
    )


def wait_healthy(host: SimHost, port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.run(f"curl -sf -o /dev/null http://127.0.0.1:{port}/health", check=False).rc == 0:
            return
        time.sleep(0.5)
    logs = host.sudo("docker ps -a; docker logs --tail 20 $(docker ps -lq)", check=False).stdout
    raise TimeoutError(f"stand-in on port {port} not healthy after {timeout:.0f}s\n{logs}")


def used_mib(host: SimHost) -> list[int]:
    out = host.run("nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits").stdout
    return [int(v) for v in out.split()]


def test_gpu_flags_select_gpus_through_the_hook(host: SimHost) -> None:
    assert [v["host_index"] for v in gpus_json(host, "--gpus all")] == list(range(8))
    two = gpus_json(host, "--gpus '\"device=2,3\"'")
    assert [(v["index"], v["host_index"]) for v in two] == [(0, 2), (1, 3)]
    profile = json.loads(host.run("cat /etc/nvidia-sim/profile.json").stdout)
    by_uuid = gpus_json(host, f"--gpus device={profile['gpus'][5]['uuid']}")
    assert [v["host_index"] for v in by_uuid] == [5]
    assert by_uuid[0]["memory_total_bytes"] == profile["memory_total_bytes"]
    # Without --gpus nothing is exposed; with the nvidia runtime the environment variable alone selects GPUs.
    assert host.sudo(f"docker run --rm --entrypoint cat {IMAGE} /run/nvidia-sim/gpus.json", check=False).rc != 0
    runtime = gpus_json(host, "--runtime nvidia", env="-e NVIDIA_VISIBLE_DEVICES=7")
    assert [v["host_index"] for v in runtime] == [7]


def test_a_gpu_container_without_a_loaded_driver_fails_like_the_real_hook(host: SimHost) -> None:
    host.sudo("mv /run/nvidia-sim/module.json /run/nvidia-sim/module.json.off")
    try:
        failed = host.sudo(f"docker run --rm --gpus all --entrypoint true {IMAGE}", check=False)
    finally:
        host.sudo("mv /run/nvidia-sim/module.json.off /run/nvidia-sim/module.json")
    assert failed.rc != 0
    assert "driver not loaded" in failed.stderr


def test_memory_of_a_running_server_is_accounted_and_blocks_a_second_one(host: SimHost) -> None:
    total_bytes = json.loads(host.run("cat /etc/nvidia-sim/profile.json").stdout)["memory_total_bytes"]
    host.sudo(stand_in("ms4fleet-test-a", "0", 8100, args="--gpu-memory-utilization 0.5"))
    try:
        wait_healthy(host, 8100)
        assert used_mib(host) == [int(0.5 * total_bytes) // 2**20, 0, 0, 0, 0, 0, 0, 0]
        apps = host.run("nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader").stdout
        pid, name, _ = apps.strip().split(", ")
        assert name == "vllm" and host.run(f"test -d /proc/{pid}", check=False).rc == 0
        second = host.sudo(stand_in("ms4fleet-test-b", "0", 8101, detach=False), check=False)
        assert second.rc != 0
        assert "Free memory on device" in second.stdout + second.stderr
        # The refused server's memory is gone with its process; the first one's is still held.
        assert used_mib(host)[0] == int(0.5 * total_bytes) // 2**20
    finally:
        host.sudo("docker rm -f ms4fleet-test-a", check=False)
    assert used_mib(host) == [0] * 8


def _host_ip(sim_fleet: SimFleet, host: SimHost) -> str:
    info = dockercli.inspect("container", host.container)
    assert info is not None
    return str(info["NetworkSettings"]["Networks"][sim_fleet.record.network]["IPAddress"])


@pytest.fixture
def served(host: SimHost, sim_fleet: SimFleet) -> Iterator[str]:
    """Start a stand-in on GPUs 4,5 reachable from the test machine; yield its URL."""
    name, port = "ms4fleet-test-verify", 8200
    host.sudo(stand_in(name, "4,5", port, bind="0.0.0.0", args="--tensor-parallel-size 2"))
    try:
        wait_healthy(host, port)
        yield f"http://{_host_ip(sim_fleet, host)}:{port}"
    finally:
        host.sudo(f"docker rm -f {name}", check=False)


def test_healthy_stand_in_passes_verification(served: str) -> None:
    report = verify(served, "tiny", checks=VERIFY_CHECKS, timeout_s=30)
    assert report.ok, report.to_dict()


def test_health_503_switch_fails_verification(served: str, host: SimHost, sim_faults: SetFaults) -> None:
    sim_faults(host.name, health_503=True)
    report = verify(served, "tiny", checks=VERIFY_CHECKS, timeout_s=30)
    assert not report.ok
    assert report.check("health").status == "fail"


def test_crash_on_first_decode_passes_health_then_fails_completion(
    served: str, host: SimHost, sim_faults: SetFaults
) -> None:
    sim_faults(host.name, crash_on_first_decode=True)
    assert httpx.get(f"{served}/health", timeout=10).status_code == 200
    report = verify(served, "tiny", checks=VERIFY_CHECKS, timeout_s=30)
    assert report.check("health").status == "pass"
    assert report.check("completion").status == "fail"
    assert not report.ok


def test_refuse_start_switch_stops_the_server_before_it_listens(host: SimHost, sim_faults: SetFaults) -> None:
    sim_faults(host.name, refuse_start="simulated refusal for the test")
    run = host.sudo(stand_in("ms4fleet-test-refuse", "6", 8300, detach=False), check=False)
    assert run.rc == 1
    assert "simulated refusal for the test" in run.stdout + run.stderr


def test_the_production_units_docker_command_runs_unchanged(host: SimHost) -> None:
    """The `docker run` line ms4fleet.serving renders into the unit, run as is by systemd on the sim host."""
    config = HostConfig.from_host_data(
        host.name,
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_runtime": {"image": IMAGE},
            # Open: the unit is installed without the secrets' environment file, the checks carry no key.
            "ms4fleet_serving": {"open_endpoint": True},
        },
    )
    replica = plan_host(config).replicas[0]
    exec_start = next(line for line in replica.unit_text.splitlines() if line.startswith("ExecStart="))
    # The unit's wrapper (re-attach to a running container, tested in tests/unit/test_serving.py) ends in
    # the `docker run` line: that line, as the wrapper execs it.
    words = shlex.split(exec_start.removeprefix("ExecStart="))
    argv = words[words.index("/usr/bin/docker") :]
    assert words[:2] == ["/bin/sh", "-c"] and argv[:2] == ["/usr/bin/docker", "run"] and '"device=0,1"' in argv
    model_dir = next(arg for arg in argv if arg.endswith(":/models:ro")).split(":")[0]
    params = {
        "dim": 4096,
        "n_layers": 36,
        "n_heads": 32,
        "kv_lora_rank": 256,
        "qk_rope_head_dim": 64,
        "max_position_embeddings": 1048576,
    }
    host.sudo(
        f"mkdir -p {model_dir} && printf %s {shlex.quote(json.dumps(params))} > {model_dir}/params.json"
        f" && echo '{{}}' > {model_dir}/tekken.json"
        f" && truncate -s 2G {model_dir}/consolidated-00001-of-00001.safetensors"
    )
    unit = "ms4fleet-test-production"
    host.sudo(f"systemd-run --unit {unit} --collect -- {shlex.join(argv)}")
    try:
        wait_healthy(host, replica.internal_port, timeout=120)
        models = json.loads(host.run(f"curl -sf http://127.0.0.1:{replica.internal_port}/v1/models").stdout)
        assert [m["id"] for m in models["data"]] == [config.profile.served_model_name]
        assert used_mib(host)[:3] == [used_mib(host)[0], used_mib(host)[0], 0] and used_mib(host)[0] > 0
    finally:
        host.sudo(f"systemctl stop {unit}; docker rm -f {replica.container_name}", check=False)
