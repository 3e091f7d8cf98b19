"""Fetch a profile's weights into a directory, atomically: stage, verify, seal, rename.

``fetch_weights`` is what both engines and the CLI call. The order of work:

1. ``dest`` already verifies for this repo, revision and patterns: done, nothing touches the network.
2. List the source at the pinned revision and select the profile's files.
3. Preflight: free space for what is still missing (exact sizes from the listing), owner exists.
4. Stage in ``<dest>.partial``: reuse what is already there (a previous interrupted run, or ``dest`` itself
   when it holds the same revision but failed verification), fetch only missing or bad files, hashing each.
5. Finalize (``weights_verify.finalize``): verify, give to the owner, make read-only, rename over ``dest``.

An interrupted run leaves only ``<dest>.partial`` (never a ``dest`` that verifies with missing files);
the next run resumes from it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights.errors import IntegrityError, SourceError, WeightsError
from ms4fleet.weights.hub import file_digests
from ms4fleet.weights.manifest import FileEntry, Manifest, read_manifest, write_manifest
from ms4fleet.weights.preflight import DiskUsage, check_disk, check_owner
from ms4fleet.weights.source import RemoteFile, Source, select
from ms4fleet.weights.transfer import NullProgress, Progress, partial_path

log = logging.getLogger(__name__)

Action = Literal["present", "fetched", "repaired", "resumed"]


@dataclass(frozen=True)
class FetchResult:
    dest: Path
    manifest: Manifest
    action: Action
    fetched: tuple[str, ...] = ()
    bytes_transferred: int = 0
    hashed: tuple[str, ...] = ()


@contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """One fetch per destination at a time (engines, timers and humans may all try); later ones wait."""
    lock = dest.parent / f".{dest.name}.lock"
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Engines fetch for many hosts at once: the first does the work, the others then find it done.
            log.warning("%s: another fetch into this directory is running; waiting for it", dest)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _matches(manifest: Manifest, source: Source, profile: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return (manifest.repo, manifest.revision, manifest.profile, manifest.include, manifest.exclude) == (
        source.repo_id,
        source.revision,
        profile,
        tuple(include),
        tuple(exclude),
    )


def _remaining_bytes(staging: Path, wanted: Sequence[RemoteFile]) -> int:
    """Bytes still to transfer, judged by stat alone (before any byte moves)."""
    remaining = 0
    for item in wanted:
        target = staging / item.path
        if target.is_file() and target.stat().st_size == item.size:
            continue
        part = partial_path(staging, item.path)
        done = part.stat().st_size if part.is_file() else 0
        remaining += max(item.size - done, 0)
    return remaining


def _open_staging(dest: Path, staging: Path, dest_report: hv.Report | None) -> Action:
    """Create or reuse the staging dir; a failing ``dest`` of the same revision becomes it (bad files out)."""
    if staging.exists():
        # An interrupted run's staging dir wins; dest keeps serving until the finalize rename replaces it.
        hv.make_writable_dirs(str(staging))
        return "resumed"
    if dest_report is not None and not dest_report["error"] and not dest_report["ok"]:
        os.rename(dest, staging)
        hv.make_writable_dirs(str(staging))
        for bad in dest_report["bad"]:
            hv.remove_entry(str(staging / bad["path"]))
        log.warning(
            "%s: %d bad file(s) (%s); refetching only those",
            dest,
            len(dest_report["bad"]),
            ", ".join(f"{b['path']}: {b['reason']}" for b in dest_report["bad"]),
        )
        return "repaired"
    staging.mkdir(parents=True)
    return "fetched"


def make_parent(dest: Path) -> None:
    """Create the directory ``dest`` goes in, or say in one line why it cannot be (before any byte moves)."""
    parent = Path(os.path.abspath(dest)).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(
            f"{dest}: its directory {parent} cannot be created ({err.strerror or err}): choose another --dest"
        ) from None


def fetch_weights(
    source: Source,
    dest: Path,
    *,
    profile: str,
    include: Sequence[str],
    exclude: Sequence[str] = (),
    owner: str | None = None,
    full: bool = False,
    workers: int = 4,
    progress: Progress | None = None,
    disk_usage: DiskUsage = shutil.disk_usage,
) -> FetchResult:
    """Make ``dest`` hold exactly ``source``'s files matching the patterns, verified and read-only."""
    dest = Path(os.path.abspath(dest))
    progress = progress or NullProgress()
    check_owner(owner)
    make_parent(dest)
    staging = Path(hv.staging_dir(str(dest)))
    if not hv.replaceable(str(dest)):
        raise WeightsError(f"{dest} exists and is not an ms4fleet weights directory: refusing to replace it")
    with _locked(dest):
        dest_report: hv.Report | None = None
        if Path(hv.manifest_path(str(dest))).exists():
            dest_report = hv.verify(str(dest), full=full, repo=source.repo_id, revision=source.revision)
            if dest_report["ok"]:
                manifest = read_manifest(dest)
                if _matches(manifest, source, profile, include, exclude):
                    return FetchResult(dest, manifest, "present", hashed=tuple(dest_report["hashed"]))
                dest_report = None  # same revision, other file set: fetch it as a new set

        wanted = select(source.list_files(), include, exclude)
        if not wanted:
            raise SourceError(f"{source.describe()}: no file matches include {list(include)} / exclude {list(exclude)}")
        if staging.exists():
            freed = source.reclaim(staging)
            if freed:
                log.warning("%s: removed %d bytes an interrupted run left that cannot be resumed", staging, freed)
        same_revision = dest_report is not None and not dest_report["error"]
        have = staging if staging.exists() or not same_revision else dest
        remaining = _remaining_bytes(have, wanted)
        check_disk(staging, remaining, disk_usage)
        progress.expect(remaining)
        action = _open_staging(dest, staging, dest_report)
        fetched, transferred = _fill(source, staging, wanted, profile, include, exclude, workers, progress)
        report = hv.finalize(str(dest), owner=owner, repo=source.repo_id, revision=source.revision)
        if not report["ok"]:
            raise IntegrityError(f"{dest}: staged files failed verification: {report['error'] or report['bad']}")
        return FetchResult(dest, read_manifest(dest), action, tuple(fetched), transferred, tuple(report["hashed"]))


def _fill(
    source: Source,
    staging: Path,
    wanted: Sequence[RemoteFile],
    profile: str,
    include: Sequence[str],
    exclude: Sequence[str],
    workers: int,
    progress: Progress,
) -> tuple[list[str], int]:
    fetched: list[str] = []
    transferred = 0
    # Small non-LFS Hub files have no sha256 in the listing: fetch (or re-check) them first, by git blob id,
    # so the staging manifest is complete before the large files start.
    entries: dict[str, FileEntry] = {}
    for item in wanted:
        if item.sha256 is not None:
            entries[item.path] = FileEntry(path=item.path, size=item.size, sha256=item.sha256)
            continue
        target = staging / item.path
        if target.is_file() and target.stat().st_size == item.size:
            sha256, sha1 = file_digests(target)
            if sha1 == item.git_sha1:
                entries[item.path] = FileEntry(path=item.path, size=item.size, sha256=sha256)
                continue
            target.unlink()
        sha256, sent = source.fetch(item, staging, progress)
        fetched.append(item.path)
        transferred += sent
        entries[item.path] = FileEntry(path=item.path, size=item.size, sha256=sha256)

    manifest = Manifest(
        repo=source.repo_id,
        revision=source.revision,
        profile=profile,
        source=source.kind,
        include=tuple(include),
        exclude=tuple(exclude),
        files=tuple(entries[item.path] for item in wanted),
    )
    try:
        previous = read_manifest(staging)
    except WeightsError:
        previous = None
    if previous is None or previous.model_dump(exclude={"created"}) != manifest.model_dump(exclude={"created"}):
        # Same content keeps the same manifest bytes, so the stamp of a previous run stays valid.
        write_manifest(staging, manifest)
    hv.mark_verified(str(staging), fetched)

    report = hv.verify(str(staging))
    if report["error"]:
        raise WeightsError(f"{staging}: {report['error']}")
    todo = [item for item in wanted if item.path in {b["path"] for b in report["bad"]}]
    for item in todo:
        hv.remove_entry(str(staging / item.path))

    def _one(item: RemoteFile) -> tuple[str, int]:
        try:
            return source.fetch(item, staging, progress)
        except IntegrityError as err:
            log.warning("%s; fetching it once more", err)
            return source.fetch(item, staging, progress)

    errors: list[WeightsError] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [(item, pool.submit(_one, item)) for item in todo]
        for item, future in futures:
            try:
                _sha, sent = future.result()
            except WeightsError as err:
                errors.append(err)
                continue
            fetched.append(item.path)
            transferred += sent
            # Record progress per file, so an interruption later keeps this file's verification.
            hv.mark_verified(str(staging), [item.path])
    if errors:
        raise errors[0]
    return fetched, transferred
