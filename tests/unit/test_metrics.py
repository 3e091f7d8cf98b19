"""ms4fleet.metrics: vLLM's /metrics read with prometheus_client's parser, and the sim stand-in's text read back."""

from __future__ import annotations

import pytest

from ms4fleet import metrics
from ms4fleet_sim.standin.metrics import Metrics

TEXT = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
# TYPE vllm:num_requests_running_total counter
vllm:num_requests_running_total 99
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.75
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="m"} 100.0
vllm:generation_tokens_total{engine="1",model_name="m"} 20.0
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 4.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 1.0
"""


def test_load_sums_engines_and_takes_the_fullest_cache() -> None:
    load = metrics.ReplicaLoad.from_text(TEXT)
    # A name that only starts like a gauge (running_total) is another metric, not a second reading.
    assert load == metrics.ReplicaLoad(
        running=5.0, waiting=1.0, kv_cache_usage=0.75, prompt_tokens=0.0, generation_tokens=120.0
    )


def test_labels_select_samples() -> None:
    samples = metrics.parse(TEXT)
    assert metrics.total(samples, metrics.REQUEST_SUCCESS, finished_reason="stop") == 4.0
    assert metrics.total(samples, metrics.REQUEST_SUCCESS) == 5.0
    assert metrics.total(samples, "vllm:no_such_metric") is None


def test_malformed_text_is_one_error() -> None:
    with pytest.raises(metrics.MetricsError, match="not Prometheus text"):
        metrics.parse('vllm:num_requests_running{engine="0" 3\n')


def test_a_server_without_vllm_gauges_is_named() -> None:
    with pytest.raises(metrics.MetricsError, match=r"lacks vllm:num_requests_running, .*vllm:kv_cache_usage_perc"):
        metrics.ReplicaLoad.from_text("process_cpu_seconds_total 1.0\n")


def test_tokens_per_s_from_counter_deltas() -> None:
    before = metrics.ReplicaLoad(0, 0, 0, 0, 100.0)
    after = metrics.ReplicaLoad(0, 0, 0, 0, 350.0)
    assert metrics.tokens_per_s(before, after, 2.5) == 100.0
    # A restarted replica's counters start again at 0: no negative throughput.
    assert metrics.tokens_per_s(after, before, 2.5) == 0.0
    with pytest.raises(ValueError):
        metrics.tokens_per_s(before, after, 0)


def test_the_standin_exposition_reads_back() -> None:
    standin = Metrics("mistral-small-4")
    standin.running, standin.waiting, standin.kv_cache_usage = 2, 7, 0.5
    standin.generation_tokens, standin.prompt_tokens = 41, 9
    standin.ttft.observe(0.2)
    samples = metrics.parse(standin.render())
    assert metrics.ReplicaLoad.from_samples(samples) == metrics.ReplicaLoad(2, 7, 0.5, 9, 41)
    assert metrics.total(samples, metrics.TTFT + "_count") == 1
    assert metrics.total(samples, metrics.TTFT + "_bucket", le="0.25") == 1
    assert metrics.total(samples, metrics.TTFT + "_bucket", le="0.1") == 0
