"""Benchmark: mirror fetch vs curl on one 1 GiB file over loopback, and the cost of an interruption.

    .venv/bin/python bench/weights_fetch.py [--size-mib 1024] [--rounds 3]

1. Throughput: ``curl -o`` and ``ms4fleet.weights`` (MirrorSource + fetch_weights: Range-capable httpx
   download, sha256 checked, staged, sealed and renamed) fetch the same file from the same loopback server
   (tests/support/hubserver.py, which sends with sendfile), alternating, ``--rounds`` times each. The ratio
   of median throughputs is printed (target >= 0.9).
2. Interruption: a fetch in a child process is killed (SIGKILL) mid-file, then re-run. Printed: the bytes
   the server sent in total minus the file size, i.e. what was transferred twice, next to the transfer
   chunk size (target: at most one chunk).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from hubserver import HubServer

from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights.fetch import fetch_weights
from ms4fleet.weights.manifest import FileEntry, Manifest, write_manifest
from ms4fleet.weights.mirror import MirrorSource
from ms4fleet.weights.ranged import SEGMENT
from ms4fleet.weights.transfer import partial_path

REPO = "bench/one-file"
REVISION = "b" * 40
NAME = "consolidated-00001-of-00001.safetensors"

CHILD = """
import sys
from pathlib import Path
from ms4fleet.weights.fetch import fetch_weights
from ms4fleet.weights.mirror import MirrorSource
url, dest = sys.argv[1], Path(sys.argv[2])
fetch_weights(MirrorSource(url, "bench/one-file", "b" * 40), dest, profile="bench", include=["*.safetensors"])
"""


def make_mirror(root: Path, size: int) -> Path:
    directory = root / REPO / REVISION
    directory.mkdir(parents=True)
    block = os.urandom(64 * 1024 * 1024)
    digest = hashlib.sha256()
    with (directory / NAME).open("wb") as handle:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            handle.write(piece)
            digest.update(piece)
            left -= len(piece)
    entry = FileEntry(path=NAME, size=size, sha256=digest.hexdigest())
    write_manifest(directory, Manifest(repo=REPO, revision=REVISION, profile="bench", source="path", files=(entry,)))
    return directory / NAME


def drop_caches_for(path: Path) -> None:
    # Keep the source file hot (both clients read it from page cache) but the destination cold.
    with path.open("rb") as handle:
        while handle.read(16 * 1024 * 1024):
            pass


def time_curl(url: str, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(out), url], check=True)
    elapsed = time.perf_counter() - start
    out.unlink()
    return elapsed


def time_ours(base: str, dest: Path) -> float:
    start = time.perf_counter()
    fetch_weights(MirrorSource(base, REPO, REVISION), dest, profile="bench", include=["*.safetensors"])
    elapsed = time.perf_counter() - start
    hv.remove_tree(str(dest))
    return elapsed


def interrupted(base: str, work: Path, size: int, hub: HubServer) -> tuple[int, int, int]:
    """(bytes on disk at the kill, bytes sent twice, offset the re-run resumed from)."""
    dest = work / "interrupted" / "m"
    part = partial_path(Path(hv.staging_dir(str(dest))), NAME)
    hub.clear()
    child = subprocess.Popen([sys.executable, "-c", CHILD, base, str(dest)])
    while not (part.exists() and part.stat().st_size >= size * 2 // 5):
        if child.poll() is not None:
            raise SystemExit("the fetch finished before it could be interrupted: use a larger --size-mib")
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    on_disk = part.stat().st_size
    time.sleep(0.5)  # let the server notice the closed connection and log what it really sent
    first = sum(h.body_bytes for h in hub.gets(NAME))
    hub.clear()
    subprocess.run([sys.executable, "-c", CHILD, base, str(dest)], check=True)
    second = hub.gets(NAME)
    resumed_at = int((second[0].range or "bytes=0-").split("=")[1].split("-")[0])
    assert hv.verify(str(dest), full=True)["ok"], "the resumed fetch does not verify"
    return on_disk, first + sum(h.body_bytes for h in second) - size, resumed_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="where to put the files (default: a temp dir)")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed")
    size = args.size_mib * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="ms4fleet-bench-", dir=args.workdir))
    try:
        source = make_mirror(work / "mirror", size)
        with HubServer(mirror_root=work / "mirror") as hub:
            base = f"{hub.url}/mirror"
            url = f"{base}/{REPO}/{REVISION}/{NAME}"
            drop_caches_for(source)
            curl_times, our_times = [], []
            for _ in range(args.rounds):
                curl_times.append(time_curl(url, work / "curl.out"))
                our_times.append(time_ours(base, work / "ours" / "m"))
            curl_mbs = size / statistics.median(curl_times) / 1e6
            our_mbs = size / statistics.median(our_times) / 1e6
            print(f"file: {args.size_mib} MiB over loopback, {args.rounds} rounds each")
            print(f"curl                 median {statistics.median(curl_times):6.2f} s  {curl_mbs:8.1f} MB/s")
            print(f"ms4fleet (verified)  median {statistics.median(our_times):6.2f} s  {our_mbs:8.1f} MB/s")
            ratio = our_mbs / curl_mbs
            print(f"ratio ms4fleet/curl: {ratio:.2f}x (target >= 0.90): {'PASS' if ratio >= 0.9 else 'FAIL'}")

            on_disk, twice, resumed_at = interrupted(base, work, size, hub)
            print(
                f"interrupted at {on_disk / 2**20:.1f} MiB on disk;"
                f" resumed with Range from {resumed_at / 2**20:.1f} MiB;"
                f" sent twice: {twice / 2**20:.2f} MiB; chunk (Range segment) {SEGMENT / 2**20:.0f} MiB:"
                f" {'PASS' if twice <= SEGMENT else 'FAIL'}"
            )
        return 0 if ratio >= 0.9 and twice <= SEGMENT else 1
    finally:
        hv.remove_tree(str(work))


if __name__ == "__main__":
    raise SystemExit(main())
