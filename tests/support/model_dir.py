"""A model directory as ms4fleet leaves it on a host: the files and their manifest (repo ``o/r``, ``REV``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ms4fleet.weights.manifest import FileEntry, Manifest, write_manifest

REV = "a" * 40


def make_model_dir(directory: Path, files: dict[str, bytes]) -> Path:
    """``directory`` (created) holding ``files`` (relative path -> bytes) and the manifest naming each."""
    directory.mkdir(parents=True)
    entries = []
    for rel, data in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)
        entries.append(FileEntry(path=rel, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    write_manifest(directory, Manifest(repo="o/r", revision=REV, profile="p", source="path", files=tuple(entries)))
    return directory
