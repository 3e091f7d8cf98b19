"""Peer staging from the controller: every host runs ``hostside/weights_relay.py`` over SSH, the controller
assigns each one a feeder from ``ms4fleet.weights.tree`` and re-plans when a feeder dies or sends bad bytes.

Transport: plain HTTP between hosts, on each host's ``weights.peer_address`` (the staging network) and
``weights.peer_port``, with a random token per run that every request must carry. Chosen over rsync between
hosts because it needs no key material on any host: host-to-host rsync over SSH would mean installing an
ephemeral key in every child's ``authorized_keys`` (or forwarding an agent into every feeder) and copying
host keys between hosts, and undoing it after. The token (sent over SSH stdin, never argv) only lets its
holder read the weights while the run lasts; integrity never rests on the peer: each host is given the pinned
manifest by the controller and keeps (and serves) a file only after its sha256 matches it.

+ ``PeerJob(job, address, port)``; ``stage_tree(source, manifest_text, jobs, limits, ...)`` -> ``TreeReport``.
+ ``Source``: a mirror's revision URL (no token), or ``serve_staged(dir, bind, port)``: the controller's own copy.
"""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

from ms4fleet.childenv import child_env
from ms4fleet.config import HostConfig
from ms4fleet.hostside import weights_relay as relay
from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.request import WeightsRequest, mirror_for
from ms4fleet.weights.stage import HostProgress, StageJob, target_for, verifier_source
from ms4fleet.weights.tree import SOURCE, Limits, StagePlan, plan_tree, replan

# Failed tries (each after a refused or timed-out connection, about 2 s apart or more) before a host that
# cannot reach a live feeder fails; a dead feeder is noticed sooner (its SSH session ends within ~10 s).
FEEDER_DOWN_LIMIT = 15


@dataclass(frozen=True)
class PeerJob:
    job: StageJob
    address: str
    port: int

    @property
    def name(self) -> str:
        return self.job.host.name

    def url(self, port: int | None = None) -> str:
        """Where this host serves, on ``port`` when it bound another (``port`` 0: any free one, for tests)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{port or self.port}{relay.FILES_PATH}"


@dataclass(frozen=True)
class Source:
    """Where seeds pull from: ``url`` ends in ``/``; ``token`` False for a mirror (it gets no token)."""

    url: str
    tokened: bool = False


@dataclass
class PeerOutcome:
    host: str
    status: str = "failed"  # present | staged | failed
    detail: str = ""
    bytes_received: int = 0
    feeders: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class TreeReport:
    outcomes: list[PeerOutcome]
    plan: StagePlan
    # Bytes the hosts fed by the source received from it (the source's egress, counted on the receiving side).
    source_bytes: int = 0
    cut: dict[str, str] = field(default_factory=dict)  # host -> why it was cut out
    revision_bytes: int = 0

    def summary(self) -> list[str]:
        """Per host, then the tree and what the source sent, then every host cut out and why."""
        size = self.revision_bytes
        out = self.lines()
        out.append(
            f"tree: {self.plan.source_links()} seed(s), depth {self.plan.max_depth}; the source sent "
            f"{self.source_bytes / 1024**3:.2f} GiB ({self.source_bytes / max(size, 1):.2f}x the revision)"
        )
        out += [f"cut out: {host}: {why}" for host, why in self.cut.items()]
        return out

    def lines(self) -> list[str]:
        out = []
        for outcome in self.outcomes:
            via = f" via {' then '.join(outcome.feeders)}" if outcome.feeders else ""
            notes = f"; {'; '.join(outcome.notes)}" if outcome.notes else ""
            gib = outcome.bytes_received / 1024**3
            out.append(f"{outcome.host}: {outcome.status}: {outcome.detail}{via} ({gib:.2f} GiB received){notes}")
        return out


def relay_source() -> bytes:
    return resources.files("ms4fleet.hostside").joinpath("weights_relay.py").read_bytes()


class _Host:
    def __init__(self, peer: PeerJob, argv: list[str], stdin: bytes, events: queue.Queue[Any]) -> None:
        self.peer = peer
        self.outcome = PeerOutcome(peer.name)
        self.feeder: str | None = None
        self.url = peer.url()
        self.moved_from_source = 0
        self.moved_before = 0
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env()
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self.stderr: list[bytes] = []
        self.proc.stdin.write(stdin)
        self.proc.stdin.flush()
        threading.Thread(target=self._read, args=(self.proc.stdout, events), daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr or []), daemon=True).start()

    def _read(self, stream: IO[bytes], events: queue.Queue[Any]) -> None:
        for line in stream:
            try:
                events.put((self.peer.name, json.loads(line)))
            except ValueError:
                continue
        events.put((self.peer.name, {"event": "exit", "code": self.proc.wait()}))

    def send(self, message: dict[str, Any]) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # the host is gone: its exit event follows

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def last_error(self) -> str:
        text = b"".join(self.stderr).decode(errors="replace").strip().splitlines()
        return text[-1] if text else "no output"


def _argv(peer: PeerJob, repo: str, revision: str) -> list[str]:
    job = peer.job
    args = ["relay", job.dest, "--repo", repo, "--revision", revision, "--bind", peer.address]
    args += ["--port", str(peer.port)] + (["--owner", job.owner] if job.owner else [])
    argv = job.host.command([job.host.python, "-c", relay.BOOTSTRAP, *args])
    if job.host.hostname is not None:
        # A host that dies mid-transfer answers nothing: notice within ~10 s (ssh keeps an option's first value).
        argv[1:1] = ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"]
    return argv


def stage_tree(
    source: Source,
    manifest_text: str,
    peers: Sequence[PeerJob],
    limits: Limits,
    token: str | None = None,
    progress: HostProgress | None = None,
    timeout: float = 6 * 3600,
) -> TreeReport:
    """Stage the revision ``manifest_text`` pins to every peer through a tree rooted at ``source``."""
    manifest = json.loads(manifest_text)
    repo, revision = manifest["repo"], manifest["revision"]
    sizes = {entry["path"]: entry["size"] for entry in manifest["files"]}
    token = token or secrets.token_urlsafe(32)
    hello = {"token": token, "manifest": manifest_text, "sources": [] if source.tokened else [source.url]}
    stdin = relay.bootstrap_input(verifier_source(), relay_source(), hello)
    events: queue.Queue[Any] = queue.Queue()
    hosts = {peer.name: _Host(peer, _argv(peer, repo, revision), stdin, events) for peer in peers}
    deadline = time.monotonic() + timeout
    plan = StagePlan({})
    planned = False
    ready: dict[str, bool] = {}  # host -> holds the verified revision (after its own check)
    verified: set[str] = set()
    cut: dict[str, str] = {}
    finished: set[str] = set()
    downs: dict[tuple[str, str], int] = {}

    def url_of(feeder: str) -> str:
        return source.url if feeder == SOURCE else hosts[feeder].url

    def assign(new: StagePlan) -> None:
        nonlocal plan
        for child, feeder in new.parents.items():
            host = hosts[child]
            if host.feeder != feeder and child not in finished:
                host.feeder = feeder
                host.outcome.feeders.append("source" if feeder == SOURCE else feeder)
                host.send({"feeder": url_of(feeder)})
        plan = new

    def drop(name: str, why: str) -> None:
        cut[name] = why
        finished.add(name)
        hosts[name].outcome.status = "failed"
        hosts[name].outcome.detail = why
        hosts[name].stop()
        if progress is not None:
            progress.done(name)
        if planned:
            assign(replan(plan, [name], verified, limits))

    while len(finished) < len(hosts):
        try:
            name, event = events.get(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        except queue.Empty:
            if time.monotonic() >= deadline:
                for name in set(hosts) - finished:
                    drop(name, f"timed out after {timeout:.0f} s; re-run to resume")
            continue
        host = hosts[name]
        kind = event.get("event")
        if kind == "serving":
            ready[name] = bool(event["holder"])
            host.url = host.peer.url(event["port"])
            if not event["holder"] and event.get("action") == "repair":
                host.outcome.notes.append("held the revision but failed verification: re-fetched its bad files")
            if progress is not None and not event["holder"]:
                have = set(event.get("have", []))
                progress.row(name, sum(size for rel, size in sizes.items() if rel not in have))
        elif kind == "progress":
            if host.feeder == SOURCE:
                host.moved_from_source += event["moved"] - host.moved_before
            host.moved_before = event["moved"]
            host.outcome.bytes_received = event["moved"]
            if progress is not None:
                progress.moved(name, event["moved"], event["total"])
        elif kind == "feeder_bad":
            bad = next((n for n, h in hosts.items() if h.url == event["feeder"]), None)
            if event["feeder"] == source.url:
                # The pin is the truth: a source whose bytes differ from it feeds no one (fix the mirror or pin).
                drop(name, f"the source sent {event['path']} with bytes that do not match the pinned manifest")
            elif bad is not None and bad not in cut:
                # Never a feeder again; it stops, and a re-run re-verifies and repairs it.
                drop(bad, f"sent {event['path']} with bytes that do not match the pinned manifest: cut out")
        elif kind == "feeder_down":
            # A feeder that is up but never answers this host (a closed peer_port, a wrong peer_address) would
            # leave it waiting for the whole timeout: after this many failed tries it fails, by name, instead.
            key = (name, event["feeder"])
            downs[key] = downs.get(key, 0) + 1
            feeder = next((n for n, h in hosts.items() if h.url == event["feeder"]), None)
            if downs[key] >= FEEDER_DOWN_LIMIT and feeder not in cut and name not in finished:
                what = "the source" if event["feeder"] == source.url else f"its feeder {feeder}"
                drop(name, f"cannot reach {what} at {event['feeder']} ({event['error']}): is the peer port open?")
        elif kind == "verified":
            verified.add(name)
            finished.add(name)
            host.outcome.status = "staged" if ready.get(name) is False else "present"
            host.outcome.detail = "verified on host" if not ready.get(name) else "already verified"
            if progress is not None:
                progress.done(name)
        elif kind == "failed":
            if name not in finished:
                drop(name, f"failed: {event.get('error', '')}")
        elif kind == "exit" and name not in cut:
            if name in verified:
                # A feeder that dies after verifying: it holds the revision, but feeds no one any more.
                cut[name] = "left while feeding"
                if planned:
                    assign(replan(plan, [name], verified, limits))
            else:
                why = f"the host dropped out (exit {event['code']}: {host.last_error()}); a re-run resumes it"
                drop(name, why)
        if not planned and len(ready) + len(cut) >= len(hosts):
            planned = True
            live = [n for n in hosts if n not in cut]
            holders = [n for n in live if ready.get(n)]
            plan = plan_tree([n for n in live if not ready.get(n)], holders, limits)
            assign(plan)
    for host in hosts.values():
        host.stop()
    for host in hosts.values():
        try:
            host.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            host.proc.kill()
    source_bytes = sum(h.moved_from_source for h in hosts.values())
    return TreeReport([hosts[p.name].outcome for p in peers], plan, source_bytes, cut, sum(sizes.values()))


def mirror_source(mirror_url: str, repo: str, revision: str) -> Source:
    return Source(f"{mirror_url.rstrip('/')}/{repo}/{revision}/")


def serve_staged(staged: Path, bind: str, port: int, token: str) -> tuple[Source, Any]:
    """Serve the controller's verified copy to the seeds; returns the source and the server (``shutdown()``)."""
    from http.server import ThreadingHTTPServer

    manifest, _digest = hv.load_manifest(str(staged))
    shelf = relay.Shelf(str(staged), {e["path"]: e for e in manifest["files"]}, token)
    for rel in shelf.files:
        shelf.add(rel)
    server = ThreadingHTTPServer((bind, port), relay.make_handler(shelf))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"[{bind}]" if ":" in bind else bind
    return Source(f"http://{host}:{server.server_address[1]}{relay.FILES_PATH}", tokened=True), server


@dataclass(frozen=True)
class Member:
    """One inventory host of a tree: how to reach it (pyinfra or Ansible keys), its config and its request."""

    name: str
    connection: Mapping[str, Any]
    data: Mapping[str, Any]
    config: HostConfig
    request: WeightsRequest

    @property
    def limits(self) -> Limits:
        weights = self.config.weights
        assert weights is not None  # a request exists only for a host with a weights section
        return Limits(fanout=weights.peer_fanout, seeds=weights.peer_seeds)

    def peer(self) -> PeerJob:
        target = target_for(self.name, self.connection, self.data)
        weights = self.config.weights
        assert weights is not None
        address = weights.peer_address or target.hostname or "127.0.0.1"
        return PeerJob(StageJob(target, self.request.dest, self.request.owner), address, weights.peer_port)


def check_members(members: Sequence[Member], source_address: str | None) -> None:
    """Before any host is touched: one tree per revision shares one fan-out and seed count; a source other than a
    mirror is served by the controller, on an address the hosts reach. ``WeightsError`` (one line) otherwise."""
    first = members[0]
    for member in members[1:]:
        if member.limits != first.limits:
            raise WeightsError(
                f"{member.name}: weights.peer_fanout/peer_seeds ({member.limits.fanout}/{member.limits.seeds}) "
                f"differ from {first.name}'s ({first.limits.fanout}/{first.limits.seeds}): set them once for the fleet"
            )
    if source_address is None and any(member.request.source != "mirror" for member in members):
        raise WeightsError(
            "peer staging from a hub or path source: the controller serves its copy to the first hosts; "
            "give its address on the staging network (--source-address)"
        )


def stage_group(
    members: Sequence[Member],
    staged: tuple[Path, str] | None,
    source_address: str | None,
    progress: HostProgress | None = None,
) -> TreeReport:
    """Stage hosts that want the same bytes. ``staged`` (the controller's verified copy and the run's token) is
    served on ``source_address``; without it the source is the hosts' mirror and the controller reads only the
    pinned manifest from it."""
    check_members(members, source_address)
    first = members[0]
    request = first.request
    server = None
    token = None
    if staged is None:
        assert request.mirror_url is not None
        manifest_text = mirror_for(request).manifest_body().decode()
        feed = mirror_source(request.mirror_url, request.repo_id, request.revision)
    else:
        assert source_address is not None
        directory, token = staged
        manifest_text = Path(hv.manifest_path(str(directory))).read_text()
        try:
            feed, server = serve_staged(directory, source_address, first.peer().port, token)
        except OSError as err:
            raise WeightsError(f"cannot serve the controller's copy on {source_address}: {err.strerror}") from None
    try:
        return stage_tree(feed, manifest_text, [m.peer() for m in members], first.limits, token, progress)
    finally:
        if server is not None:
            server.shutdown()
