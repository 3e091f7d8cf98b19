"""How many GPU hosts serve, sampled every ``interval_s`` while a change runs: a host serves when nginx on the
load balancer routes to it (none of its replicas marked ``down`` in ms4fleet's config, or no config yet) and
every replica answers GET /health on its public port (the host proxy), from the test's controller.

The sampler runs in a process of its own: the change it watches runs inside the test's process (pyinfra's
greenlets, paramiko, the rollout), which in CI held the sampler's thread off for a second. The LB's config is
read through one ``docker exec`` shell kept open for the whole run (a new exec per sample would take longer
than the interval on a loaded machine); a shell that dies is replaced and its sample retried. Samples start
at a fixed rate and may overlap: on a loaded 2-core machine one sample (a config read and every replica's
/health) can take longer than the interval, and waiting for it would stretch the time between observations;
each sample is stamped when it starts (time.monotonic, which a child process shares with its parent).
"""

from __future__ import annotations

import itertools
import multiprocessing
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from ms4fleet.rollout import lb

_END = "--ms4fleet-end--"


@dataclass(frozen=True)
class Target:
    host: str
    urls: tuple[str, ...]


@dataclass
class Samples:
    points: list[tuple[float, int]] = field(default_factory=list)

    @property
    def least(self) -> int:
        return min(n for _, n in self.points)

    def largest_gap_s(self) -> float:
        times = [t for t, _ in self.points]
        return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


class _Sampler:
    """The sampling itself, in the sampler's process."""

    def __init__(self, lb_container: str, targets: Sequence[Target], interval_s: float = 0.25) -> None:
        self.targets = list(targets)
        self.interval_s = interval_s
        self.samples = Samples()
        self.shell_restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lb_container = lb_container
        self._shell = self._open_shell()
        self._pool = ThreadPoolExecutor(max_workers=8)
        self._samplers = ThreadPoolExecutor(max_workers=4)
        self._conf_lock = threading.Lock()
        self._points_lock = threading.Lock()
        self._client = httpx.Client(timeout=1.0, limits=httpx.Limits(max_keepalive_connections=0))

    def _open_shell(self) -> subprocess.Popen[str]:
        script = f"while read _; do cat {lb.CONF_PATH} 2>/dev/null; echo {_END}; done"
        return subprocess.Popen(
            ["docker", "exec", "-i", self._lb_container, "sh", "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _read_conf(self) -> str | None:
        """The config through the open shell, or None when the shell is gone."""
        shell = self._shell
        assert shell.stdin is not None and shell.stdout is not None
        try:
            shell.stdin.write("\n")
            shell.stdin.flush()
        except (BrokenPipeError, ValueError):
            return None
        lines: list[str] = []
        for line in iter(shell.stdout.readline, ""):
            if line.strip() == _END:
                return "".join(lines)
            lines.append(line)
        return None  # EOF before the end mark: the shell died mid-read

    def _conf(self) -> str:
        with self._conf_lock:
            conf = self._read_conf()
            if conf is None:
                self._close_shell()
                self.shell_restarts += 1
                self._shell = self._open_shell()
                conf = self._read_conf()
            if conf is None:
                raise RuntimeError(f"cannot read {lb.CONF_PATH} in {self._lb_container}")
            return conf

    def _close_shell(self) -> None:
        try:
            if self._shell.stdin is not None:
                self._shell.stdin.close()
        except BrokenPipeError:
            pass  # it died with our last newline unread
        try:
            self._shell.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._shell.kill()
            self._shell.wait()

    def _healthy(self, url: str) -> bool:
        try:
            return self._client.get(f"{url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def sample(self) -> int:
        conf = self._conf()
        down = lb.routed(conf).down if conf.strip() else frozenset()
        urls = [url for target in self.targets for url in target.urls]
        health = dict(zip(urls, self._pool.map(self._healthy, urls), strict=True))
        return sum(1 for t in self.targets if t.host not in down and all(health[u] for u in t.urls))

    def _one(self, started: float) -> None:
        count = self.sample()
        with self._points_lock:
            self.samples.points.append((started, count))
            self.samples.points.sort()

    def _run(self) -> None:
        pending: list[Future[None]] = []
        next_at = time.monotonic()
        while not self._stop.is_set():
            pending = [f for f in pending if not f.done()]
            pending.append(self._samplers.submit(self._one, time.monotonic()))
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        for future in pending:
            future.result(timeout=30)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._samplers.shutdown()
        self._close_shell()
        self._pool.shutdown()
        self._client.close()


def _sample(lb_container: str, targets: list[Target], interval_s: float, stop: Any, out: Any) -> None:
    """The sampler process: samples until ``stop`` is set, then sends its points and shell restarts."""
    sampler = _Sampler(lb_container, targets, interval_s)
    with sampler:
        while not sampler.samples.points:
            time.sleep(0.05)
        out.send("ready")
        stop.wait()
    out.send((sampler.samples.points, sampler.shell_restarts))


class ServingSampler:
    """Counts the hosts serving from a process of its own while the ``with`` block runs."""

    def __init__(self, lb_container: str, targets: Sequence[Target], interval_s: float = 0.25) -> None:
        context = multiprocessing.get_context("spawn")
        self.samples = Samples()
        self.shell_restarts = 0
        self._stop = context.Event()
        self._results, child = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_sample, args=(lb_container, list(targets), interval_s, self._stop, child), daemon=True
        )

    def __enter__(self) -> ServingSampler:
        self._process.start()
        # The first sample is taken before the change starts.
        if not self._results.poll(120) or self._results.recv() != "ready":
            self._process.kill()
            raise RuntimeError("the serving sampler took no first sample in 120 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if not self._results.poll(120):
            self._process.kill()
            raise RuntimeError("the serving sampler sent no samples 120 s after it was stopped")
        points, self.shell_restarts = self._results.recv()
        self.samples.points = list(points)
        self._process.join(timeout=30)
