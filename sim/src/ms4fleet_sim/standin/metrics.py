"""Prometheus text exposition with vLLM's metric names, help texts, labels and histogram buckets.

Names and buckets are those of vllm/v1/metrics/loggers.py and buckets.py (vLLM 0.32); labels are
``model_name`` and ``engine``, printed sorted as prometheus_client does.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

# Bucket upper bounds in seconds, as vLLM lists them (data: one tuple a metric, packed).
# fmt: off
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0, 160.0, 640.0, 2560.0,
)
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
)
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
)
# fmt: on
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    observations: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        for position in range(index, len(self.buckets)):
            self.counts[position] += 1
        self.total += value
        self.observations += 1


def _fmt(value: float) -> str:
    return repr(float(value))


class Metrics:
    """The engine's counters; thread-safe, rendered on every scrape."""

    def __init__(self, model_name: str) -> None:
        self._lock = threading.Lock()
        self._labels = {"engine": "0", "model_name": model_name}
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success = dict.fromkeys(FINISH_REASONS, 0)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def _labelset(self, **extra: str) -> str:
        labels = {**self._labels, **extra}
        return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"

    def _family(self, lines: list[str], name: str, kind: str, doc: str) -> None:
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")

    def _histogram(self, lines: list[str], name: str, doc: str, hist: Histogram) -> None:
        self._family(lines, name, "histogram", doc)
        for bound, count in zip(hist.buckets, hist.counts, strict=True):
            lines.append(f"{name}_bucket{self._labelset(le=str(bound))} {_fmt(count)}")
        lines.append(f"{name}_bucket{self._labelset(le='+Inf')} {_fmt(hist.observations)}")
        lines.append(f"{name}_count{self._labelset()} {_fmt(hist.observations)}")
        lines.append(f"{name}_sum{self._labelset()} {_fmt(hist.total)}")

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            gauges = (
                ("vllm:num_requests_running", "Number of requests in model execution batches.", self.running),
                ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", self.waiting),
                ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", self.kv_cache_usage),
            )
            for name, doc, value in gauges:
                self._family(lines, name, "gauge", doc)
                lines.append(f"{name}{self._labelset()} {_fmt(value)}")
            counters = (
                ("vllm:num_preemptions_total", "Cumulative number of preemption from the engine.", 0),
                ("vllm:prompt_tokens_total", "Number of prefill tokens processed.", self.prompt_tokens),
                ("vllm:generation_tokens_total", "Number of generation tokens processed.", self.generation_tokens),
            )
            for name, doc, value in counters:
                self._family(lines, name, "counter", doc)
                lines.append(f"{name}{self._labelset()} {_fmt(value)}")
            name = "vllm:request_success_total"
            self._family(lines, name, "counter", "Count of successfully processed requests.")
            for reason, count in self.success.items():
                lines.append(f"{name}{self._labelset(finished_reason=reason)} {_fmt(count)}")
            self._histogram(
                lines, "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", self.ttft
            )
            self._histogram(
                lines, "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", self.itl
            )
            self._histogram(
                lines, "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", self.e2e
            )
        return "\n".join(lines) + "\n"
