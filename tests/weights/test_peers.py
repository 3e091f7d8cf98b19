"""Peer staging on this machine: relays on loopback as the hosts, the sim's mirror tree as the source."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ms4fleet.hostside import weights_relay as relay
from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights import peers as peers_module
from ms4fleet.weights.cli import main
from ms4fleet.weights.manifest import mirror_manifest_url
from ms4fleet.weights.peers import PeerJob, TreeReport, mirror_source, relay_source, serve_staged, stage_tree
from ms4fleet.weights.stage import HostTarget, StageJob, verifier_source
from ms4fleet.weights.tree import SOURCE, Limits
from ms4fleet_sim import weights_mirror


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "mirror"
    tree = weights_mirror.build_tree(root)
    server = weights_mirror.serve(root)
    yield server.url, tree
    server.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def peers(tmp_path: Path, count: int) -> list[PeerJob]:
    return [
        PeerJob(StageJob(HostTarget.local(f"h{i}"), str(tmp_path / f"h{i}" / "model")), "127.0.0.1", 0)
        for i in range(count)
    ]


def manifest_text(tree: Path) -> str:
    return (tree / ".ms4fleet" / "manifest.json").read_text()


def test_every_host_is_fed_through_the_tree_and_verifies(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    url, tree = mirror
    text = manifest_text(tree)
    manifest = json.loads(text)
    total = sum(entry["size"] for entry in manifest["files"])
    jobs = peers(tmp_path, 5)
    source = mirror_source(url, manifest["repo"], manifest["revision"])
    report = stage_tree(source, text, jobs, Limits(fanout=2, seeds=1), timeout=120)
    assert [o.status for o in report.outcomes] == ["staged"] * 5, report.lines()
    assert report.plan.source_links() == 1
    assert report.source_bytes == total
    for job in jobs:
        checked = hv.verify(job.job.dest, full=True)
        assert checked["ok"], checked
    seed = report.plan.children(SOURCE)[0]
    assert report.outcomes[[j.name for j in jobs].index(seed)].feeders == ["source"]
    assert max(report.plan.depth(j.name) for j in jobs) == 3
    assert mirror_manifest_url(url, manifest["repo"], manifest["revision"]).startswith(source.url)


def test_a_holder_with_a_corrupted_file_is_refetched_and_never_feeds_it(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, tree = mirror
    text = manifest_text(tree)
    manifest = json.loads(text)
    source = mirror_source(url, manifest["repo"], manifest["revision"])
    jobs = peers(tmp_path, 3)
    first = stage_tree(source, text, jobs[:1], Limits(), timeout=120)
    assert first.outcomes[0].status == "staged"
    # One shard of the holder changes on disk (a write through the filesystem: its ctime moves).
    holder = Path(jobs[0].job.dest)
    victim = next(e["path"] for e in manifest["files"] if e["path"].endswith(".safetensors"))
    (holder / victim).chmod(0o644)
    with (holder / victim).open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff")
    report = stage_tree(source, text, jobs, Limits(fanout=2, seeds=1), timeout=120)
    assert [o.status for o in report.outcomes] == ["staged"] * 3, report.lines()
    assert any("failed verification" in note for note in report.outcomes[0].notes)
    # It held a bad file, so it was no holder: the source fed the tree.
    assert report.plan.holders == ()
    for job in jobs:
        assert hv.verify(job.job.dest, full=True)["ok"]


def test_the_controllers_copy_feeds_the_seeds_with_the_runs_token(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    _url, tree = mirror
    text = manifest_text(tree)
    source, server = serve_staged(tree, "127.0.0.1", 0, "t0ken")
    try:
        report = stage_tree(source, text, peers(tmp_path, 2), Limits(fanout=1), token="t0ken", timeout=120)
    finally:
        server.shutdown()
    assert [o.status for o in report.outcomes] == ["staged", "staged"], report.lines()
    assert report.plan.parents == {"h0": SOURCE, "h1": "h0"}


def test_weights_stage_peers_from_an_inventory(
    tmp_path: Path, mirror: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, tree = mirror
    manifest = json.loads(manifest_text(tree))
    pin = hashlib.sha256((tree / ".ms4fleet" / "manifest.json").read_bytes()).hexdigest()

    def weights(host: str) -> dict[str, object]:
        return {
            "source": "mirror",
            "mirror_url": url,
            "allow_insecure": True,
            "manifest_sha256": pin,
            "revision": manifest["revision"],
            "dir": str(tmp_path / host),
            "peer_address": "127.0.0.1",
            "peer_port": free_port(),
            "peer_fanout": 1,
        }

    hosts = {
        name: {"ansible_connection": "local", "ms4fleet_gpu": {"kind": "h200-sxm", "count": 1},
               "ms4fleet_weights": weights(name)}
        for name in ("gpu-a", "gpu-b", "gpu-c")
    }  # fmt: skip
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    code = main(["weights", "stage", str(inventory), "--peers"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tree: 1 seed(s), depth 3; the source sent" in out
    assert "(1.00x the revision)" in out
    for name in hosts:
        assert f"{name}: staged: verified on host" in out
        dest = next((tmp_path / name).glob("*/*"))
        assert hv.verify(str(dest), full=True)["ok"]


def test_a_feeder_serving_a_changed_file_is_caught_and_nothing_bad_is_kept(
    tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    """A feeder whose file changed after it verified it (silent media corruption: no stat field moves) serves bad
    bytes: the receiving host hashes them against the pinned manifest, drops them, names the feeder and waits
    for another, from which it finishes."""
    url, tree = mirror
    text = manifest_text(tree)
    manifest = json.loads(text)
    source = mirror_source(url, manifest["repo"], manifest["revision"])
    feeder, child = peers(tmp_path, 2)
    assert stage_tree(source, text, [feeder], Limits(), timeout=120).outcomes[0].status == "staged"
    hello = {"token": "tok", "manifest": text, "sources": [source.url]}
    stdin = relay.bootstrap_input(verifier_source(), relay_source(), hello)

    def start(peer: PeerJob) -> subprocess.Popen[bytes]:
        argv = ["python3", "-c", relay.BOOTSTRAP, "relay", peer.job.dest, "--repo", manifest["repo"]]
        argv += ["--revision", manifest["revision"], "--bind", "127.0.0.1", "--port", "0"]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.flush()
        return proc

    def events(proc: subprocess.Popen[bytes], until: str) -> list[dict[str, object]]:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(json.loads(line))
            if seen[-1]["event"] == until:
                return seen
        raise AssertionError(f"no {until}: {seen}")

    serving = start(feeder)
    port = events(serving, "serving")[-1]["port"]
    # After the feeder verified its copy: one shard's bytes change in place.
    victim = next(e["path"] for e in manifest["files"] if e["path"].endswith(".safetensors"))
    path = Path(feeder.job.dest) / victim
    path.chmod(0o644)
    with path.open("r+b") as handle:
        handle.seek(7)
        handle.write(b"\x00" if handle.read(1) != b"\x00" else b"\x01")
    receiving = start(child)
    events(receiving, "serving")
    assert receiving.stdin is not None
    feeder_url = f"http://127.0.0.1:{port}{relay.FILES_PATH}"
    receiving.stdin.write(json.dumps({"feeder": feeder_url}).encode() + b"\n")
    receiving.stdin.flush()
    bad = events(receiving, "feeder_bad")[-1]
    assert bad == {"event": "feeder_bad", "feeder": feeder_url, "path": victim}
    assert not (Path(child.job.dest + ".partial") / victim).exists()
    receiving.stdin.write(json.dumps({"feeder": source.url}).encode() + b"\n")
    receiving.stdin.flush()
    assert events(receiving, "verified")[-1]["event"] == "verified"
    for proc in (serving, receiving):
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    assert hv.verify(child.job.dest, full=True)["ok"]
    assert not hv.verify(feeder.job.dest, full=True)["ok"]


def test_a_request_without_the_runs_token_is_refused(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    _url, tree = mirror
    source, server = serve_staged(tree, "127.0.0.1", 0, "the-token")
    try:
        rel = json.loads(manifest_text(tree))["files"][0]["path"]
        for headers, status in (({}, 401), ({"Authorization": "Bearer nope"}, 401),
                                ({"Authorization": "Bearer the-token"}, 200)):  # fmt: skip
            request = urllib.request.Request(source.url + rel, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    got = response.status
                    body = response.read()
            except urllib.error.HTTPError as err:
                got, body = err.code, b""
            assert got == status
        assert body == (tree / rel).read_bytes()
    finally:
        server.shutdown()


class SlowMirror:
    """A mirror that sends at most ``rate`` bytes a second per request, so a transfer lasts long enough to be cut."""

    def __init__(self, root: Path, rate: int) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                path = root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                step = max(1, rate // 20)
                for at in range(0, len(data), step):
                    self.wfile.write(data[at : at + step])
                    time.sleep(0.05)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_a_peer_killed_mid_transfer_is_cut_out_and_its_child_finishes_from_another(tmp_path: Path) -> None:
    tree = weights_mirror.build_large_tree(tmp_path / "mirror", "bench/tree", "7e" * 20, files=6, file_bytes=1 << 20)
    text = manifest_text(tree)
    mirror = SlowMirror(tmp_path / "mirror", rate=2 << 20)
    source = mirror_source(mirror.url, "bench/tree", "7e" * 20)
    # The middle host's python records its process id: the test ends that process (one it started) mid-run.
    pidfile = tmp_path / "victim.pid"
    wrapper = tmp_path / "python-victim"
    wrapper.write_text(f'#!/bin/sh\necho $$ > {pidfile}\nexec python3 "$@"\n')
    wrapper.chmod(0o755)
    jobs = peers(tmp_path, 3)
    victim = jobs[1].job.host.name
    jobs[1] = PeerJob(StageJob(HostTarget(name=victim, python=str(wrapper)), jobs[1].job.dest), "127.0.0.1", 0)
    result: list[TreeReport] = []
    worker = threading.Thread(target=lambda: result.append(stage_tree(source, text, jobs, Limits(fanout=1))))
    worker.start()
    partial = Path(jobs[1].job.dest + ".partial")
    deadline = time.monotonic() + 60
    while sum(f.stat().st_size for f in partial.glob("*.safetensors")) < 2 << 20:
        assert time.monotonic() < deadline, "the middle host never received 2 MiB"
        time.sleep(0.05)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    worker.join(timeout=120)
    mirror.server.shutdown()
    report = result[0]
    by_name = {o.host: o for o in report.outcomes}
    assert by_name["h0"].status == by_name["h2"].status == "staged", report.lines()
    assert by_name[victim].status == "failed" and "dropped out" in by_name[victim].detail
    assert list(report.cut) == [victim]
    assert any(line.startswith(f"cut out: {victim}: the host dropped out") for line in report.summary())
    assert by_name["h2"].feeders == [victim, "h0"]
    for name in ("h0", "h2"):
        assert hv.verify(str(tmp_path / name / "model"), full=True)["ok"]


def test_a_host_that_cannot_reach_its_feeder_fails_by_name(
    tmp_path: Path, mirror: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _url, tree = mirror
    text = manifest_text(tree)
    manifest = json.loads(text)
    monkeypatch.setattr(peers_module, "FEEDER_DOWN_LIMIT", 2)
    closed = f"http://127.0.0.1:{free_port()}"
    source = mirror_source(closed, manifest["repo"], manifest["revision"])
    report = stage_tree(source, text, peers(tmp_path, 1), Limits(), timeout=60)
    outcome = report.outcomes[0]
    assert outcome.status == "failed"
    assert outcome.detail.startswith(f"cannot reach the source at {source.url} (")
    assert outcome.detail.endswith("): is the peer port open?")
