"""A bounded client load through the load balancer: a few threads sending chat completions back to back
(some streamed) until stopped, counting every failure with its reason. Only to the sim's own network.

Each request opens its own connection, as a client behind a NAT or a short-lived job would: the count
then measures the fleet and the LB, not a client's reuse of a connection the LB closed on reload.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

MODEL = "mistral-small-4"


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    # When each request was sent (monotonic): the largest gap says how often the LB was sampled.
    sent: list[float] = field(default_factory=list)

    def largest_gap_s(self, since: float, until: float) -> float:
        """The longest stretch of [since, until] in which no request was sent."""
        marks = [since, *sorted(t for t in self.sent if since <= t <= until), until]
        return max(b - a for a, b in itertools.pairwise(marks))

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "failed": self.failed, "reasons": dict(self.reasons)}


class Load:
    def __init__(self, url: str, workers: int = 3, max_requests: int = 500_000, pause_s: float = 0.02) -> None:
        self.url = url.rstrip("/")
        # A short pause between a worker's requests keeps the load steady but light on a shared machine.
        self.pause_s = pause_s
        self.workers = workers
        self.max_requests = max_requests
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(workers)]

    def _one(self, client: httpx.Client, stream: bool) -> str | None:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Count from one to ten."}],
            "max_tokens": 24,
            "stream": stream,
        }
        try:
            if stream:
                with client.stream("POST", f"{self.url}/v1/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        return f"HTTP {response.status_code}"
                    lines = [line for line in response.iter_lines() if line.startswith("data:")]
                    return None if lines and lines[-1].strip() == "data: [DONE]" else "stream cut short"
            response = client.post(f"{self.url}/v1/chat/completions", json=body)
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            choices = response.json().get("choices") or []
            return None if choices and choices[0].get("finish_reason") in ("stop", "length") else "no completion"
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def _work(self, index: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=60.0, limits=limits) as client:
            n = 0
            while not self._stop.is_set():
                with self._lock:
                    if self.result.ok + self.result.failed >= self.max_requests:
                        return
                    self.result.sent.append(time.monotonic())
                error = self._one(client, stream=(n + index) % 3 == 0)
                n += 1
                self._stop.wait(self.pause_s)
                with self._lock:
                    if error is None:
                        self.result.ok += 1
                    else:
                        self.result.failed += 1
                        self.result.reasons[error] += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)

    def wait_for(self, requests: int, timeout_s: float = 60.0) -> None:
        """Block until at least ``requests`` have completed (the load is really flowing)."""
        deadline = time.monotonic() + timeout_s
        while self.result.ok + self.result.failed < requests:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.result.ok + self.result.failed} requests in {timeout_s:g}s")
            time.sleep(0.1)
