"""Resumable, hash-checked transfer of one file into a staging directory (mirror and local-path sources).

Bytes land in ``<staging>/.ms4fleet/partial/<path>`` as they arrive; an interrupted transfer resumes from that
file's length, and the file moves to ``<staging>/<path>`` only once its size and sha256 match. A file at its
final staging path is therefore always complete and correct.

+ ``Progress``: the callback protocol fetchers report to; ``NullProgress`` ignores it.
+ ``PartialFile``: the writer; ``copy_file(...)`` and ``ranged.ranged_download(...)`` drive it.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights.errors import IntegrityError, SourceError, WeightsError

CHUNK = 4 * 1024 * 1024
RETRIES = 5


class Progress(Protocol):
    def expect(self, total: int) -> None: ...

    def start(self, path: str, total: int, done: int) -> None: ...

    def advance(self, path: str, nbytes: int) -> None: ...

    def finish(self, path: str) -> None: ...


class NullProgress:
    def expect(self, total: int) -> None:
        return None

    def start(self, path: str, total: int, done: int) -> None:
        return None

    def advance(self, path: str, nbytes: int) -> None:
        return None

    def finish(self, path: str) -> None:
        return None


def partial_path(staging: Path, rel: str) -> Path:
    return staging / hv.META_DIR / hv.PARTIAL_DIR / rel


class _Hasher:
    """sha256 on a worker thread, so hashing overlaps the network and disk (hashlib drops the GIL)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._digest.update(data)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self._queue.put(None)
        self._thread.join()
        return self._digest.hexdigest()

    def abandon(self) -> None:
        self._queue.put(None)
        self._thread.join()


class PartialFile:
    """Append-only writer over ``partial_path``; knows the offset to resume from."""

    def __init__(self, staging: Path, rel: str, size: int, sha256: str) -> None:
        self.rel, self.size, self.sha256 = rel, size, sha256
        self.part = partial_path(staging, rel)
        self.final = staging / rel
        self.part.parent.mkdir(parents=True, exist_ok=True)
        if self.part.exists() and self.part.stat().st_size > size:
            self.part.unlink()
        self._hasher = _Hasher()
        self.offset = 0
        if self.part.exists():
            # Resume: the prefix already on disk still has to go through the hash.
            with self.part.open("rb") as handle:
                while data := handle.read(CHUNK):
                    self._hasher.update(data)
                    self.offset += len(data)
        self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def restart(self) -> None:
        """The source ignored the resume offset: start the file over."""
        os.ftruncate(self._fd, 0)
        self._hasher.abandon()
        self._hasher = _Hasher()
        self.offset = 0

    def write(self, data: bytes) -> None:
        if self.offset + len(data) > self.size:
            raise IntegrityError(f"{self.rel}: source sent more than the {self.size} bytes the manifest lists")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._hasher.update(data)
        self.offset += len(data)

    def commit(self) -> None:
        """Check size and sha256, then move into place; a mismatch discards the bytes."""
        os.close(self._fd)
        self._fd = -1
        digest = self._hasher.hexdigest()
        if self.offset != self.size or digest != self.sha256:
            self.part.unlink(missing_ok=True)
            what = f"size {self.offset}" if self.offset != self.size else "sha256 mismatch"
            raise IntegrityError(f"{self.rel}: {what} against the manifest; the partial file was discarded")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.part, self.final)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._hasher.abandon()


def _read_from(path: Path, offset: int) -> Iterator[bytes]:
    with path.open("rb", buffering=0) as handle:
        handle.seek(offset)
        while data := handle.read(CHUNK):
            yield data


def copy_file(source: Path, staging: Path, rel: str, size: int, sha256: str, progress: Progress) -> int:
    """Copy ``source`` into the staging dir, resuming a partial copy; returns the bytes read from the source."""
    try:
        actual = source.stat().st_size
    except OSError as err:
        raise SourceError(f"{rel}: cannot read {source} ({err.strerror})") from None
    if actual != size:
        raise IntegrityError(f"{rel}: {source} has {actual} bytes, its manifest lists {size}")
    read = 0
    target = PartialFile(staging, rel, size, sha256)
    try:
        progress.start(rel, size, target.offset)
        try:
            for data in _read_from(source, target.offset):
                target.write(data)
                read += len(data)
                progress.advance(rel, len(data))
        except OSError as err:
            raise WeightsError(f"{rel}: copy from {source} failed ({err.strerror}); re-run to resume") from None
        target.commit()
        progress.finish(rel)
        return read
    finally:
        target.close()
