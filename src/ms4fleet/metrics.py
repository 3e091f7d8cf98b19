"""vLLM's /metrics, read in one place: prometheus_client's text parser and the metric names ms4fleet reads.

+ ``parse(text)``: every sample of a Prometheus text exposition (``MetricsError`` on malformed text).
+ ``ReplicaLoad.from_text(text)``: a replica's running / waiting requests, KV cache usage and token counters.
+ ``tokens_per_s(before, after, seconds)``: generation throughput from two reads of the counters.

The names are vLLM 0.32's (vllm/v1/metrics/loggers.py; prometheus_client adds ``_total`` to counters);
``tests/vllm/test_metric_names.py`` checks them, and the sim stand-in's, against the installed vLLM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
# Before vLLM 0.10 the KV usage gauge was gpu_cache_usage_perc: verify still recognises an older server.
KV_USAGE_NAMES = (KV_USAGE, "vllm:gpu_cache_usage_perc")
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
PREEMPTIONS = "vllm:num_preemptions_total"
REQUEST_SUCCESS = "vllm:request_success_total"
TTFT = "vllm:time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"
E2E_LATENCY = "vllm:e2e_request_latency_seconds"


class MetricsError(ValueError):
    """The text is not a Prometheus text exposition."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Every sample in ``text``, in order; one ``MetricsError`` line for anything prometheus_client refuses."""
    try:
        return [
            Sample(sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    except (ValueError, IndexError, TypeError) as exc:
        raise MetricsError(f"not Prometheus text: {exc}") from exc


def values(samples: Sequence[Sample], name: str, **labels: str) -> list[float]:
    """The values of the samples called ``name`` whose labels include ``labels``."""
    return [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def total(samples: Sequence[Sample], name: str, **labels: str) -> float | None:
    """The sum over every label set (engines, models) of ``name``; None when the server does not export it."""
    found = values(samples, name, **labels)
    return sum(found) if found else None


@dataclass(frozen=True)
class ReplicaLoad:
    """One read of a replica's /metrics: what it is doing now, and its token counters since it started."""

    running: float
    waiting: float
    kv_cache_usage: float
    prompt_tokens: float
    generation_tokens: float

    @classmethod
    def from_samples(cls, samples: Sequence[Sample]) -> ReplicaLoad:
        kv = next((values(samples, name) for name in KV_USAGE_NAMES if values(samples, name)), [])
        missing = [n for n in (RUNNING, WAITING, GENERATION_TOKENS) if total(samples, n) is None]
        if missing or not kv:
            raise MetricsError(f"/metrics lacks {', '.join(missing + ([] if kv else [KV_USAGE]))}: not a vLLM server?")
        return cls(
            running=total(samples, RUNNING) or 0.0,
            waiting=total(samples, WAITING) or 0.0,
            # Several engines (data parallel) each have their own cache: the fullest one is the one that matters.
            kv_cache_usage=max(kv),
            prompt_tokens=total(samples, PROMPT_TOKENS) or 0.0,
            generation_tokens=total(samples, GENERATION_TOKENS) or 0.0,
        )

    @classmethod
    def from_text(cls, text: str) -> ReplicaLoad:
        return cls.from_samples(parse(text))

    def to_dict(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "waiting": self.waiting,
            "kv_cache_usage": self.kv_cache_usage,
            "prompt_tokens": self.prompt_tokens,
            "generation_tokens": self.generation_tokens,
        }


def tokens_per_s(before: ReplicaLoad, after: ReplicaLoad, seconds: float) -> float:
    """Generated tokens per second between two reads; 0 when the counter went back (the replica restarted)."""
    if seconds <= 0:
        raise ValueError("the two reads must be apart in time")
    delta = after.generation_tokens - before.generation_tokens
    return delta / seconds if delta > 0 else 0.0
