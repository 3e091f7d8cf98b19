"""Bad inventories: each one exits 2 with ONE line naming the host and the field, and no traceback.

Every case is written twice, as a pyinfra .py inventory and as an Ansible YAML inventory, because the
loader must refuse both the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ms4fleet.cli import main

GOOD: dict[str, Any] = {
    "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
    "ms4fleet_serving": {"model": "mistral-small-4", "api_key": {"file": "/etc/ms4fleet/api-key"}},
    "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
    "ms4fleet_weights": {"revision": "a" * 40, "hf_token": {"env": "HF_TOKEN"}},
}


def _with(section: str, **values: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(GOOD))
    data[f"ms4fleet_{section}"] = {**data.get(f"ms4fleet_{section}", {}), **values}
    return data


# (case id, hosts as [(name, data)], expected host, expected field, a phrase of the fix)
CASES: list[tuple[str, list[tuple[str, dict[str, Any]]], str, str, str]] = [
    ("unknown-gpu-kind", [("gpu-01", _with("gpu", kind="h300-sxm"))], "gpu-01", "gpu.kind", "known: h100-sxm"),
    (
        "tp-above-gpus",
        [("gpu-02", _with("serving", tensor_parallel_size=16))],
        "gpu-02",
        "serving.tensor_parallel_size",
        "more than the host's 8 GPUs",
    ),
    (
        "tp-not-dividing",
        [("gpu-02", _with("serving", tensor_parallel_size=3))],
        "gpu-02",
        "serving.tensor_parallel_size",
        "does not divide",
    ),
    (
        "context-above-model",
        [("gpu-07", _with("serving", max_model_len=300000))],
        "gpu-07",
        "serving.max_model_len=300000",
        "exceeds Mistral Small 4's 262144",
    ),
    (
        "utilization-zero",
        [("gpu-03", _with("serving", gpu_memory_utilization=0))],
        "gpu-03",
        "serving.gpu_memory_utilization=0",
        "must be in (0, 1]",
    ),
    (
        "utilization-above-one",
        [("gpu-03", _with("serving", gpu_memory_utilization=1.2))],
        "gpu-03",
        "serving.gpu_memory_utilization=1.2",
        "must be in (0, 1]",
    ),
    (
        "reasoning-effort",
        [("gpu-04", _with("serving", default_reasoning_effort="medium"))],
        "gpu-04",
        "serving.default_reasoning_effort='medium'",
        "accepts none|high",
    ),
    (
        "api-key-by-value",
        [("gpu-05", _with("serving", api_key="sk-live-0123456789"))],
        "gpu-05",
        "serving.api_key",
        "given by value",
    ),
    (
        "hf-token-by-value",
        [("gpu-05", _with("weights", hf_token="hf_abcdefghijklmnop"))],
        "gpu-05",
        "weights.hf_token",
        "given by value",
    ),
    (
        "secret-in-env",
        [("gpu-05", _with("serving", env={"HF_TOKEN": "hf_abc"}))],
        "gpu-05",
        "serving.env",
        "looks like a secret",
    ),
    (
        "unknown-model",
        [("gpu-06", _with("serving", model="llama-4-maverick"))],
        "gpu-06",
        "serving.model='llama-4-maverick'",
        "not a known model profile",
    ),
    (
        "port-clash",
        [
            (
                "gpu-08",
                _with("serving", replicas=[{"gpus": [0, 1, 2, 3], "port": 8000}, {"gpus": [4, 5, 6, 7], "port": 8000}]),
            )
        ],
        "gpu-08",
        "serving.replicas[1].port=8000",
        "clashes",
    ),
    (
        "gpu-in-two-replicas",
        [
            (
                "gpu-08",
                _with("serving", replicas=[{"gpus": [0, 1, 2, 3], "port": 8000}, {"gpus": [3, 4, 5, 6], "port": 8001}]),
            )
        ],
        "gpu-08",
        "serving.replicas[1].gpus",
        "reuses GPU 3",
    ),
    (
        "unpinned-image",
        [("gpu-09", _with("runtime", image="vllm/vllm-openai:latest"))],
        "gpu-09",
        "runtime.image",
        "is not pinned",
    ),
    (
        "unpinned-revision",
        [("gpu-09", _with("weights", revision="main"))],
        "gpu-09",
        "weights.revision",
        "40-character commit",
    ),
    (
        "triton-mla",
        [("gpu-10", _with("serving", attention_backend="TRITON_MLA"))],
        "gpu-10",
        "serving.attention_backend",
        "crashes Mistral Small 4",
    ),
    (
        "typo-in-setting",
        [("gpu-11", _with("serving", max_modle_len=4096))],
        "gpu-11",
        "serving.max_modle_len",
        "did you mean max_model_len",
    ),
    (
        "typo-in-section",
        [("gpu-11", {**GOOD, "ms4fleet_servng": {}})],
        "gpu-11",
        "ms4fleet_servng",
        "did you mean ms4fleet_serving",
    ),
    (
        "missing-gpu",
        [("gpu-12", {k: v for k, v in GOOD.items() if k != "ms4fleet_gpu"})],
        "gpu-12",
        "gpu",
        "declare the host's GPUs",
    ),
    (
        "driver-off-branch",
        [("gpu-13", _with("provision", driver_version="570.172.08"))],
        "gpu-13",
        "provision.driver_version",
        "not on driver_branch 580",
    ),
    (
        "same-machine-twice",
        [
            ("gpu-14", {**GOOD, "ssh_hostname": "10.0.0.5", "ansible_host": "10.0.0.5"}),
            ("gpu-15", {**GOOD, "ssh_hostname": "10.0.0.5", "ansible_host": "10.0.0.5"}),
        ],
        "gpu-15",
        "address",
        "also host gpu-14",
    ),
]


def _write_py(path: Path, hosts: list[tuple[str, dict[str, Any]]]) -> Path:
    inventory = path / "inventory.py"
    inventory.write_text(f"gpus = {hosts!r}\n".replace("'", '"').replace("True", "True"))
    return inventory


def _write_yaml(path: Path, hosts: list[tuple[str, dict[str, Any]]]) -> Path:
    inventory = path / "inventory.yml"
    body = {"all": {"children": {"gpus": {"hosts": dict(hosts)}}}}
    inventory.write_text(yaml.safe_dump(body, sort_keys=False))
    return inventory


def _plan(inventory: Path) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh interpreter: what an SRE sees, traceback or not."""
    return subprocess.run(
        [sys.executable, "-m", "ms4fleet.cli", "plan", str(inventory)], capture_output=True, text=True, timeout=60
    )


def _plan_in_process(inventory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The same entry point in this interpreter (an uncaught exception would fail the test)."""
    code = main(["plan", str(inventory)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", ["py", "yml"])
@pytest.mark.parametrize(("case", "hosts", "host", "field", "fix"), CASES, ids=[c[0] for c in CASES])
def test_bad_inventory_is_refused_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    case: str,
    hosts: list[tuple[str, dict[str, Any]]],
    host: str,
    field: str,
    fix: str,
) -> None:
    inventory = (_write_py if fmt == "py" else _write_yaml)(tmp_path, hosts)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = _plan_in_process(inventory, capsys)
    assert code == 2, out + err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ms4fleet: error: {host}: {field}"), lines[0]
    assert fix in lines[0]
    # nothing written beside the inventory (no state, no partial output)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == before


@pytest.mark.parametrize("fmt", ["py", "yml"])
def test_the_real_command_prints_no_traceback(tmp_path: Path, fmt: str) -> None:
    hosts = [("gpu-07", _with("serving", max_model_len=300000))]
    done = _plan((_write_py if fmt == "py" else _write_yaml)(tmp_path, hosts))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "ms4fleet: error: gpu-07: serving.max_model_len=300000 exceeds Mistral Small 4's 262144\n"


def test_host_listed_twice_in_a_pyinfra_group(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"gpus = [('gpu-01', {GOOD!r}), ('gpu-01', {GOOD!r})]\n")
    done = _plan(inventory)
    assert done.returncode == 2
    assert (
        done.stderr.strip() == "ms4fleet: error: gpu-01: inventory is listed twice in group 'gpus': list each host once"
    )


def test_host_written_twice_in_yaml(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  hosts:\n    gpu-01: {ms4fleet_gpu: {kind: h200-sxm, count: 8}}\n"
        "    gpu-01: {ms4fleet_gpu: {kind: h100-sxm, count: 8}}\n"
    )
    done = _plan(inventory)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("ms4fleet: error: gpu-01: inventory appears twice in the same YAML mapping")


def test_the_good_inventory_plans(tmp_path: Path) -> None:
    for writer in (_write_py, _write_yaml):
        done = _plan(writer(tmp_path, [("gpu-ok", GOOD)]))
        assert done.returncode == 0, done.stderr
        assert "gpu-ok" in done.stdout and "fits" in done.stdout
