"""The serving plan: replica layout, the exact vLLM argv, and the systemd unit bytes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.config import HostConfig
from ms4fleet.escape import systemd_word as systemd_quote
from ms4fleet.inventory import load_inventory
from ms4fleet.rollout.lb import DRAIN_WINDOW_S
from ms4fleet.serving import CONTAINER_STOP_S, plan_host, timeout_start_s
from tests.support.systemd_syntax import exec_argv, unit_lines

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "golden"
REVISION = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"


def host(kind: str = "h200-sxm", count: int = 8, **sections: dict[str, Any]) -> HostConfig:
    data: dict[str, Any] = {
        "ms4fleet_gpu": {"kind": kind, "count": count},
        "ms4fleet_weights": {"revision": REVISION, "hf_token": {"env": "HF_TOKEN"}},
    }
    data.update({f"ms4fleet_{k}": v for k, v in sections.items()})
    return HostConfig.from_host_data("gpu-1", data)


@pytest.mark.parametrize(
    ("kind", "count", "tp", "replicas"),
    [("h200-sxm", 8, 2, 4), ("h100-sxm", 8, 4, 2), ("b200", 8, 2, 4), ("h200-nvl", 2, 2, 1), ("h100-sxm", 4, 4, 1)],
)
def test_every_gpu_serves_exactly_one_replica(kind: str, count: int, tp: int, replicas: int) -> None:
    plan = plan_host(host(kind, count))
    assert (plan.tp, len(plan.replicas)) == (tp, replicas)
    assert sorted(g for r in plan.replicas for g in r.gpus) == list(range(count))
    assert [r.port for r in plan.replicas] == [8000 + i for i in range(replicas)]
    assert len({r.unit_name for r in plan.replicas}) == replicas


def test_mistral_small_4_argv() -> None:
    argv = plan_host(host()).replicas[0].argv
    assert argv[0] == "/models"
    text = " ".join(argv)
    for pair in (
        "--tensor-parallel-size 2",
        "--max-model-len 262144",
        "--tokenizer-mode mistral",
        "--config-format mistral",
        "--load-format mistral",
        "--tool-call-parser mistral",
        "--reasoning-parser mistral",
        "--attention-backend FLASH_ATTN_MLA",
        "--gpu-memory-utilization 0.90",
    ):
        assert pair in text
    assert "--enable-auto-tool-choice" in argv
    assert "TRITON_MLA" not in text


def test_triton_mla_never_reaches_an_argv_even_via_extra_args() -> None:
    with pytest.raises(ValueError, match="attention_backend"):
        host(serving={"attention_backend": "triton_mla"})
    with pytest.raises(ValueError, match="--attention-backend"):
        host(serving={"extra_args": ["--attention-backend=TRITON_MLA"]})


def test_reasoning_effort_default_is_passed_as_chat_template_kwargs() -> None:
    argv = plan_host(host(serving={"default_reasoning_effort": "high"})).replicas[0].argv
    i = argv.index("--default-chat-template-kwargs")
    assert argv[i + 1] == '{"reasoning_effort":"high"}'


def test_nvfp4_on_hopper_warns_and_on_blackwell_does_not() -> None:
    hopper = plan_host(host("h200-sxm", 8, serving={"checkpoint": "nvfp4"}))
    assert any("weight-only FP4 Marlin" in w for w in hopper.warnings)
    blackwell = plan_host(host("b200", 8, serving={"checkpoint": "nvfp4"}))
    assert blackwell.warnings == ()
    assert blackwell.tp == 1 and len(blackwell.replicas) == 8


def test_pcie_tensor_parallel_disables_custom_all_reduce() -> None:
    plan = plan_host(host("h100-pcie", 4))
    assert plan.tp == 4
    assert "--disable-custom-all-reduce" in plan.replicas[0].argv
    assert "--disable-custom-all-reduce" not in plan_host(host("h100-sxm", 8)).replicas[0].argv


def test_a_gqa_profile_is_served_by_the_same_code() -> None:
    plan = plan_host(host("h200-sxm", 8, serving={"model": "gpt-oss-120b"}))
    assert plan.profile.kv == "gqa"
    assert plan.tp == 1 and len(plan.replicas) == 8
    argv = plan.replicas[0].argv
    assert "--tool-call-parser" in argv and argv[argv.index("--tool-call-parser") + 1] == "openai"
    assert "--tokenizer-mode" not in argv and "--attention-backend" not in argv
    assert plan.sizing.kv_bytes_per_token == 73_728


def test_docker_unit_keeps_secrets_out_and_binds_loopback() -> None:
    plan = plan_host(host(serving={"api_key": {"file": "/etc/ms4fleet/api-key"}}))
    unit = plan.replicas[1].unit_text
    assert "EnvironmentFile=/etc/ms4fleet/vllm.env\n" in unit
    assert " -e VLLM_API_KEY " in unit
    assert "VLLM_API_KEY=" not in unit and "--api-key" not in unit
    assert " --network host " in unit and " -p " not in unit
    assert "--host 127.0.0.1 --port 28001 " in unit
    assert f"/srv/ms4fleet/models/mistralai--Mistral-Small-4-119B-2603/{REVISION}:/models:ro" in unit
    assert '--gpus "\\"device=2,3\\""' in unit
    assert "--ipc=host" in unit
    assert "Restart=always\n" in unit
    assert f"TimeoutStartSec={timeout_start_s(plan.profile)}\n" in unit
    assert "Requires=nvidia-fabricmanager.service" in unit  # 8 x H200 SXM sits on NVSwitch


def _unit_values(unit: str, key: str) -> list[str]:
    return [value for _section, k, value in unit_lines(unit) if k == key]


@pytest.mark.parametrize("kind", ["docker", "native"])
def test_a_stop_drains_for_the_load_balancers_window(kind: str) -> None:
    replica = plan_host(host(runtime={"kind": kind, "venv": "/opt/vllm"})).replicas[0]
    argv = list(replica.argv)
    assert argv[argv.index("--shutdown-timeout") + 1] == str(DRAIN_WINDOW_S)
    assert argv.count("--shutdown-timeout") == 1
    (stop_timeout,) = _unit_values(replica.unit_text, "TimeoutStopSec")
    assert int(stop_timeout) > DRAIN_WINDOW_S
    (exec_start,) = _unit_values(replica.unit_text, "ExecStart")
    assert exec_argv(exec_start)[-len(argv) :] == argv
    if kind == "native":
        return
    words = exec_argv(exec_start)
    container_stop = int(words[words.index("--stop-timeout") + 1])
    (exec_stop,) = _unit_values(replica.unit_text, "ExecStop")
    stop_words = exec_argv(exec_stop)
    # docker stop --time "$1" "$0": the container's name, then its stop timeout.
    assert stop_words[-2:] == [replica.container_name, str(container_stop)]
    assert DRAIN_WINDOW_S < container_stop < int(stop_timeout)


@pytest.mark.parametrize(
    "args",
    [["--shutdown-timeout", "0"], ["--shutdown_timeout=5"], ["--shutdown-t", "1"], ["--shutdown-timeout.x", "1"]],
)
def test_extra_args_cannot_set_the_shutdown_timeout(args: list[str]) -> None:
    with pytest.raises(ValueError, match=r"--shutdown-timeout.*drain window") as refused:
        host(serving={"extra_args": args})
    assert "serving.extra_args" in str(refused.value) and "\n" not in str(refused.value)


def test_a_vllm_without_the_drain_flag_is_refused() -> None:
    # gpt-oss runs on vLLM 0.10.1, but the units pass --shutdown-timeout, which vLLM has from 0.18.0 on.
    with pytest.raises(ValueError, match=r"runtime.vllm_version runs vLLM 0.17.1, below 0.18.0.*--shutdown-timeout"):
        host(serving={"model": "gpt-oss-120b"}, runtime={"kind": "native", "vllm_version": "0.17.1"})
    assert plan_host(host(serving={"model": "gpt-oss-120b"}, runtime={"image": "vllm/vllm-openai:v0.18.0"}))


def test_docker_unit_adopts_only_its_own_running_container() -> None:
    def start_words(**serving: Any) -> list[str]:
        (exec_start,) = _unit_values(plan_host(host(serving=serving)).replicas[0].unit_text, "ExecStart")
        return exec_argv(exec_start)

    words = start_words()
    # sh -c SCRIPT CONTAINER SPEC docker run ... --label ms4fleet.spec=SPEC ...
    assert words[:2] == ["/bin/sh", "-c"]
    container, spec = words[3], words[4]
    assert container == "ms4fleet-vllm-0"
    assert words[5:7] == ["/usr/bin/docker", "run"]
    # No --rm: Docker 20.10 removes such a container when dockerd restarts, live-restore or not.
    assert "--rm" not in words
    assert f"ms4fleet.spec={spec}" in words[5:]
    assert start_words() == words  # same plan, same spec: a running container is re-attached
    assert start_words(max_num_seqs=32)[4] != spec  # another argv: the old container is replaced


FAKE_DOCKER = """#!/bin/sh
# `docker` for the unit's scripts: logs each call; `ps` lists a container when FAKE_RUNNING names its spec label.
echo "$*" >> "$FAKE_LOG"
case "$1" in
  ps) [ -n "$FAKE_DOWN" ] && exit 1; for a in "$@"; do [ "$a" = "label=ms4fleet.spec=$FAKE_RUNNING" ] && echo 0123abcd; done ;;
esac
exit 0
"""


def _run_unit_command(tmp_path: Path, value: str, env: dict[str, str], status: int = 0) -> list[str]:
    """Run an ExecStart=/ExecStop= value as systemd would (its argv, no shell), with a fake docker."""
    fake = tmp_path / "docker"
    fake.write_text(FAKE_DOCKER)
    fake.chmod(0o755)
    log = tmp_path / "calls"
    log.write_text("")
    argv = [
        str(fake) if word == "/usr/bin/docker" else word.replace("/usr/bin/docker", str(fake))
        for word in exec_argv(value)
    ]
    done = subprocess.run(argv, env={"PATH": "/usr/bin:/bin", "FAKE_LOG": str(log), **env}, timeout=30)
    assert done.returncode == status
    return log.read_text().splitlines()


def test_docker_unit_scripts_adopt_replace_and_stop(tmp_path: Path) -> None:
    replica = plan_host(host()).replicas[0]
    (exec_start,) = _unit_values(replica.unit_text, "ExecStart")
    (exec_stop,) = _unit_values(replica.unit_text, "ExecStop")
    spec = exec_argv(exec_start)[4]
    name = replica.container_name
    # Its own container still running (dockerd restarted under live-restore): re-attached, nothing removed.
    calls = _run_unit_command(tmp_path, exec_start, {"FAKE_RUNNING": spec})
    assert calls[1:] == [f"attach --no-stdin {name}"]
    # None running, or one from another release: whatever has the name is removed, the replica runs anew.
    for running in ("", "0" * 16):
        calls = _run_unit_command(tmp_path, exec_start, {"FAKE_RUNNING": running})
        assert calls[1] == f"rm --force {name}"
        assert calls[2].startswith(f"run --label ms4fleet.spec={spec} --name {name} ")
        assert calls[2].endswith(" ".join(replica.argv))
    # dockerd not answering yet: the start fails (systemd retries), nothing is removed.
    calls = _run_unit_command(tmp_path, exec_start, {"FAKE_RUNNING": spec, "FAKE_DOWN": "1"}, status=1)
    assert [c.split()[0] for c in calls] == ["ps"]
    # A stop while the client runs drains the container; after the client died with dockerd it leaves it.
    assert _run_unit_command(tmp_path, exec_stop, {"MAINPID": "42"}) == [f"stop --time {CONTAINER_STOP_S} {name}"]
    assert _run_unit_command(tmp_path, exec_stop, {}) == []


def test_docker_unit_survives_a_docker_restart() -> None:
    unit = plan_host(host()).replicas[0].unit_text
    # Requires= would restart the replica with dockerd; a pre-start `docker rm --force` would kill the
    # container live-restore kept.
    assert _unit_values(unit, "Wants") == ["network-online.target", "docker.service"]
    assert "docker.service" not in " ".join(_unit_values(unit, "Requires"))
    assert not any("docker" in v for v in _unit_values(unit, "ExecStartPre"))


def test_timeout_is_derived_from_the_weights() -> None:
    # 600 s + 111 GB at 200 MB/s = 555 s, rounded up to whole minutes -> 600 + 600
    assert timeout_start_s(host().profile) == 1200
    assert timeout_start_s(host(serving={"checkpoint": "nvfp4"}).profile) == 600 + 360


def test_native_unit_runs_the_venv_as_the_service_user() -> None:
    plan = plan_host(host("h100-nvl", 2, runtime={"kind": "native", "venv": "/opt/vllm"}))
    unit = plan.replicas[0].unit_text
    assert "ExecStart=/opt/vllm/bin/vllm serve /srv/ms4fleet/models/" in unit
    assert "--host 127.0.0.1" in unit
    assert "Environment=CUDA_VISIBLE_DEVICES=0,1\n" in unit
    assert "User=ms4fleet\n" in unit
    assert "docker" not in unit
    assert "nvidia-fabricmanager" not in unit  # NVL cards: no NVSwitch


def test_systemd_quoting() -> None:
    assert systemd_quote("plain") == "plain"
    assert systemd_quote('{"a":1}') == '"{\\"a\\":1}"'
    assert systemd_quote("50%") == "50%%"
    assert systemd_quote("$HOME") == "$$HOME"
    assert systemd_quote("a b") == '"a b"'


def test_unit_bytes_match_the_golden_file() -> None:
    """Both engines write exactly these bytes; a change here is a change on every host."""
    fleet = load_inventory(ROOT / "inventory" / "example.py")
    h200 = next(h for h in fleet if h.name == "gpu-h200-01")
    unit = plan_host(h200.config).replicas[1].unit_text
    golden = GOLDEN / "gpu-h200-01.ms4fleet-vllm-1.service"
    if os.environ.get("MS4FLEET_UPDATE_GOLDEN"):
        golden.write_text(unit)
    assert unit == golden.read_text()


def test_plans_from_pyinfra_and_ansible_inventories_are_identical() -> None:
    py = {h.name: plan_host(h.config).to_dict() for h in load_inventory(ROOT / "inventory" / "example.py")}
    yml = {h.name: plan_host(h.config).to_dict() for h in load_inventory(ROOT / "inventory" / "example.yml")}
    assert py == yml
    units_py = [
        r.unit_text for h in load_inventory(ROOT / "inventory" / "example.py") for r in plan_host(h.config).replicas
    ]
    units_yml = [
        r.unit_text for h in load_inventory(ROOT / "inventory" / "example.yml") for r in plan_host(h.config).replicas
    ]
    assert units_py == units_yml
