"""A loopback weights mirror for the simulated fleet: a small synthetic Mistral-native checkpoint
(``params.json`` with Mistral Small 4's dimensions, a few small ``consolidated-*.safetensors``, ``tekken.json``)
laid out as ``ms4fleet.weights.mirror`` expects (``<url>/<repo_id>/<revision>/`` + ``.ms4fleet/manifest.json``).

+ ``build_tree(root, profile_id, revision)``: write the tree (deterministic bytes) and return its directory;
  ``manifest_sha256(profile_id, revision)``: the pin of its manifest.
+ ``build_large_tree(root, repo, revision, files, file_bytes)``: random bytes (``file_bytes`` each) and their
  manifest, for staging benches that need a revision of real size; returns the directory.
+ ``serve(root)``: a threaded HTTP server on 127.0.0.1; ``MirrorServer.url``.

Run ``python -m ms4fleet_sim.weights_mirror DIR [--port P]`` to build and serve it in the foreground.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import threading
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ms4fleet.catalog import model_profiles
from ms4fleet.weights.manifest import FileEntry, Manifest, manifest_bytes, write_manifest

SIM_REVISION = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"
SIM_PROFILE = "mistral-small-4-fp8"
CREATED = "2026-01-01T00:00:00+00:00"
SHARDS = 3
SHARD_BYTES = 256 * 1024
# Mistral Small 4 (mistral4 configuration): MLA with kv_lora_rank 256, 36 layers, 128 experts.
PARAMS: dict[str, Any] = {
    "dim": 4096,
    "n_layers": 36,
    "head_dim": 128,
    "hidden_dim": 12288,
    "n_heads": 32,
    "n_kv_heads": 32,
    "q_lora_rank": 1024,
    "kv_lora_rank": 256,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 64,
    "v_head_dim": 128,
    "norm_eps": 1e-06,
    "vocab_size": 131072,
    "rope_theta": 10000.0,
    "max_seq_len": 1048576,
    "max_position_embeddings": 1048576,
    "moe": {"num_experts": 128, "num_experts_per_tok": 4, "num_shared_experts": 1, "moe_intermediate_dim": 2048},
}


def _safetensors(index: int) -> bytes:
    """A valid safetensors file: one U8 tensor of deterministic bytes."""
    body = hashlib.sha256(f"ms4fleet-sim-shard-{index}".encode()).digest() * (SHARD_BYTES // 32)
    header = json.dumps(
        {f"layers.{index}.sim": {"dtype": "U8", "shape": [len(body)], "data_offsets": [0, len(body)]}},
        separators=(",", ":"),
    ).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + body


def _files() -> dict[str, bytes]:
    files = {
        "params.json": json.dumps(PARAMS, indent=2).encode() + b"\n",
        "tekken.json": json.dumps({"config": {"pattern": "sim", "num_vocab_tokens": 131072}, "vocab": []}).encode(),
    }
    for i in range(1, SHARDS + 1):
        files[f"consolidated-{i:05d}-of-{SHARDS:05d}.safetensors"] = _safetensors(i)
    return files


def _manifest(profile_id: str, revision: str) -> Manifest:
    profile = model_profiles()[profile_id]
    return Manifest(
        repo=profile.repo_id,
        revision=revision,
        profile=profile.id,
        source="mirror",
        include=profile.include_patterns,
        exclude=profile.exclude_patterns,
        # Fixed, so the manifest's bytes (and the sha256 the sim's inventories pin) never change.
        created=CREATED,
        files=tuple(
            FileEntry(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
            for name, data in sorted(_files().items())
        ),
    )


def manifest_sha256(profile_id: str = SIM_PROFILE, revision: str = SIM_REVISION) -> str:
    """What ``weights.manifest_sha256`` pins for the tree ``build_tree`` writes."""
    return hashlib.sha256(manifest_bytes(_manifest(profile_id, revision))).hexdigest()


def build_tree(root: Path, profile_id: str = SIM_PROFILE, revision: str = SIM_REVISION) -> Path:
    """Write ``root/<repo_id>/<revision>/`` with the files and their manifest; idempotent."""
    manifest = _manifest(profile_id, revision)
    directory = root / manifest.repo / revision
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(_files().items()):
        path = directory / name
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
    write_manifest(directory, manifest)
    return directory


def build_large_tree(root: Path, repo: str, revision: str, files: int, file_bytes: int) -> Path:
    """``root/<repo>/<revision>/`` with ``files`` shards of random bytes and their manifest (written once)."""
    directory = root / repo / revision
    if (directory / ".ms4fleet" / "manifest.json").is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(1, files + 1):
        name = f"consolidated-{index:05d}-of-{files:05d}.safetensors"
        digest = hashlib.sha256()
        with (directory / name).open("wb") as out:
            left = file_bytes
            while left:
                block = os.urandom(min(left, 8 << 20))
                out.write(block)
                digest.update(block)
                left -= len(block)
        entries.append(FileEntry(path=name, size=file_bytes, sha256=digest.hexdigest()))
    manifest = Manifest(repo=repo, revision=revision, profile=SIM_PROFILE, source="mirror", files=tuple(entries))
    write_manifest(directory, manifest)
    return directory


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@dataclass
class MirrorServer:
    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(root: Path, port: int = 0) -> MirrorServer:
    """Serve ``root`` on 127.0.0.1 (loopback only) from a background thread."""
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="weights-mirror", daemon=True)
    thread.start()
    return MirrorServer(server, thread)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ms4fleet_sim.weights_mirror", description=__doc__)
    parser.add_argument("root", type=Path, help="directory to build the mirror tree in")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--profile", default="mistral-small-4-fp8")
    args = parser.parse_args(argv)
    directory = build_tree(args.root, args.profile)
    mirror = serve(args.root, args.port)
    print(f"{mirror.url} serves {directory.relative_to(args.root)} (revision {SIM_REVISION})", flush=True)
    try:
        mirror.thread.join()
    except KeyboardInterrupt:
        mirror.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
