"""Benchmark: the quick (stat + stamp) check vs the full sha256 check on a weights directory.

    .venv/bin/python bench/weights_verify.py [--files 4] [--file-mib 1024]

Builds a directory of ``--files`` shards, finalizes it, then times, in one run: the full check (every byte
hashed), the quick check before a restart (nothing changed: stat only), and the quick check after one shard
was rewritten (only that shard hashed). Printed as seconds and as the ratio to the full check: the quick
check is what runs before every service (re)start, so it must not grow with the checkpoint size.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights.manifest import FileEntry, Manifest, write_manifest


def build(root: Path, files: int, size: int) -> Path:
    dest = root / "m"
    staging = Path(hv.staging_dir(str(dest)))
    staging.mkdir(parents=True)
    block = os.urandom(64 * 1024 * 1024)
    entries = []
    for index in range(files):
        name = f"consolidated-{index + 1:05d}-of-{files:05d}.safetensors"
        digest = hashlib.sha256()
        with (staging / name).open("wb") as handle:
            left = size
            while left:
                piece = block[: min(left, len(block))]
                handle.write(piece)
                digest.update(piece)
                left -= len(piece)
        entries.append(FileEntry(path=name, size=size, sha256=digest.hexdigest()))
    manifest = Manifest(repo="bench/verify", revision="c" * 40, profile="bench", source="path", files=tuple(entries))
    write_manifest(staging, manifest)
    report = hv.finalize(str(dest))
    assert report["ok"], report
    return dest


def timed(directory: Path, full: bool) -> tuple[float, hv.Report]:
    start = time.perf_counter()
    report = hv.verify(str(directory), full=full)
    return time.perf_counter() - start, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--file-mib", type=int, default=1024)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ms4fleet-verify-bench-"))
    try:
        dest = build(root, args.files, args.file_mib * 1024 * 1024)
        total = args.files * args.file_mib
        full_s, full = timed(dest, full=True)
        quick_s, quick = timed(dest, full=False)
        shard = dest / sorted(p.name for p in dest.iterdir() if p.suffix == ".safetensors")[0]
        os.chmod(shard, 0o644)  # any metadata change moves ctime: this shard must be re-hashed
        os.chmod(shard, 0o444)
        changed_s, changed = timed(dest, full=False)
        assert full["ok"] and quick["ok"] and changed["ok"]
        print(f"directory: {args.files} files, {total} MiB")
        print(f"full check      {full_s:8.3f} s  hashed {len(full['hashed'])} files  ({total / full_s:7.1f} MiB/s)")
        print(f"quick, no change{quick_s:8.3f} s  hashed {len(quick['hashed'])} files  ({quick_s / full_s:.4f}x full)")
        print(
            f"quick, 1 changed{changed_s:8.3f} s  hashed {len(changed['hashed'])} file   "
            f"({changed_s / full_s:.4f}x full)"
        )
        ok = not quick["hashed"] and changed["hashed"] == [shard.name] and quick_s < full_s / 100
        print(f"quick check without changes costs < 1% of the full check: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        hv.remove_tree(str(root))


if __name__ == "__main__":
    raise SystemExit(main())
