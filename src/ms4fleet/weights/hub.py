"""Weights from the Hugging Face Hub through huggingface_hub's own client, at a pinned commit.

The file listing (``list_repo_tree`` at the commit) is the source of truth: an LFS file's sha256 is its LFS
oid (the same value the Hub sends as ``X-Linked-Etag``), a small non-LFS file is checked against its git
blob id. Each file is downloaded with ``hf_hub_download(local_dir=staging)``, which resumes a dropped
connection with Range requests and keeps completed files across runs.

+ ``HubSource(repo_id, revision, token, endpoint)``.
+ ``translate(err, ...)``: a Hub exception as one actionable line.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub._local_folder import get_local_download_paths
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils.tqdm import disable_progress_bars

from ms4fleet.weights.errors import IntegrityError, SourceError
from ms4fleet.weights.secret import Secret
from ms4fleet.weights.source import RemoteFile, SourceKind
from ms4fleet.weights.transfer import CHUNK, Progress

_HUB_ERRORS = (HfHubHTTPError, LocalEntryNotFoundError, httpx.TransportError, OSError)
# How often a download's growing file is measured for the progress display.
WATCH_EVERY_S = 0.5


@contextmanager
def _watched(staging: Path, rel: str, progress: Progress) -> Iterator[list[int]]:
    """Report a Hub download's bytes as they land: huggingface_hub writes ``<hash>.<etag>.incomplete`` beside
    the file's metadata and says nothing until the file is whole (its own bars are off: ms4fleet draws one
    display). Yields ``[bytes reported]``; when the layout differs the file simply reports at its end."""
    sample = get_local_download_paths(staging, rel).incomplete_path("etag")
    pattern = sample.name[: -len("etag.incomplete")] + "*.incomplete"
    reported = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(WATCH_EVERY_S):
            size = max((p.stat().st_size for p in sample.parent.glob(pattern) if p.is_file()), default=0)
            if size > reported[0]:
                progress.advance(rel, size - reported[0])
                reported[0] = size

    thread = threading.Thread(target=watch, name=f"watch {rel}", daemon=True)
    thread.start()
    try:
        yield reported
    finally:
        stop.set()
        thread.join()


def translate(err: BaseException, repo_id: str, revision: str, endpoint: str, secret: Secret | None) -> SourceError:
    """Map a huggingface_hub/httpx exception to a one-line ``SourceError`` (no token, no traceback noise)."""
    page = f"{endpoint}/{repo_id}"
    status = err.response.status_code if isinstance(err, HfHubHTTPError) and err.response is not None else None
    if isinstance(err, GatedRepoError):
        who = "the repo is gated and no token was sent" if secret is None else "the token lacks access"
        message = f"{repo_id}: {who}: accept the terms on the model page {page} (HTTP {status})"
    elif isinstance(err, RevisionNotFoundError):
        message = f"{repo_id}: revision {revision} not found: pick a commit listed at {page}/commits/main"
    elif isinstance(err, RemoteEntryNotFoundError):
        message = f"{repo_id}: a listed file is missing at revision {revision[:12]} (HTTP 404): {err.response.url}"
    elif isinstance(err, RepositoryNotFoundError):
        message = (
            f"{repo_id}: repository not found on {endpoint} (HTTP {status}); check repo_id, or the token cannot see "
            "a private repo"
        )
    elif isinstance(err, HfHubHTTPError) and status == 401:
        message = f"{repo_id}: the token was rejected (HTTP 401): replace it with a valid READ token"
    elif isinstance(err, HfHubHTTPError) and status == 403:
        message = f"{repo_id}: access denied (HTTP 403): the token needs READ access; accept the terms at {page}"
    elif isinstance(err, HfHubHTTPError):
        message = f"{repo_id}: the Hub answered HTTP {status} at {err.response.url}; retry later"
    elif isinstance(err, LocalEntryNotFoundError | httpx.TransportError):
        cause = err.__cause__ or err
        message = f"{repo_id}: cannot reach {endpoint} ({type(cause).__name__}); check the network and re-run"
    else:
        message = f"{repo_id}: {type(err).__name__}: {err}"
    return SourceError(secret.scrub(message) if secret is not None else message)


def file_digests(path: Path) -> tuple[str, str]:
    """sha256 and git blob sha1 (what the Hub lists for a non-LFS file) of one file, in one read."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with path.open("rb", buffering=0) as handle:
        while data := handle.read(CHUNK):
            sha256.update(data)
            sha1.update(data)
    return sha256.hexdigest(), sha1.hexdigest()


class HubSource:
    kind: SourceKind = "hub"

    def __init__(self, repo_id: str, revision: str, token: Secret | None, endpoint: str | None = None) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self._token = token

    def describe(self) -> str:
        return f"{self.endpoint}/{self.repo_id} at {self.revision[:12]}"

    def _token_arg(self) -> str | bool:
        # False, not None: never fall back to a token cached in ~/.cache/huggingface by someone else.
        return self._token.reveal() if self._token is not None else False

    def _error(self, err: BaseException) -> SourceError:
        return translate(err, self.repo_id, self.revision, self.endpoint, self._token)

    def list_files(self) -> list[RemoteFile]:
        api = HfApi(endpoint=self.endpoint, token=self._token_arg(), library_name="ms4fleet")
        try:
            entries = list(api.list_repo_tree(self.repo_id, revision=self.revision, recursive=True))
        except _HUB_ERRORS as err:
            raise self._error(err) from None
        files = []
        for entry in entries:
            if not isinstance(entry, RepoFile):
                continue
            if entry.lfs is not None:
                files.append(RemoteFile(entry.path, entry.lfs.size, sha256=entry.lfs.sha256))
            else:
                files.append(RemoteFile(entry.path, entry.size, git_sha1=entry.blob_id))
        return files

    def reclaim(self, staging: Path) -> int:
        # huggingface_hub downloads into a uniquely named "*.incomplete" file and deletes it on failure; a killed
        # process leaves it behind, never to be reused. Nothing else writes there while the fetch lock is held.
        freed = 0
        for leftover in (staging / ".cache" / "huggingface" / "download").rglob("*.incomplete"):
            freed += leftover.stat().st_size
            leftover.unlink()
        return freed

    def fetch(self, item: RemoteFile, staging: Path, progress: Progress) -> tuple[str, int]:
        progress.start(item.path, item.size, 0)
        disable_progress_bars()
        try:
            with _watched(staging, item.path, progress) as reported:
                local = hf_hub_download(
                    self.repo_id,
                    item.path,
                    revision=self.revision,
                    local_dir=staging,
                    cache_dir=staging / ".cache" / "huggingface" / "hub",
                    token=self._token_arg(),
                    endpoint=self.endpoint,
                    library_name="ms4fleet",
                )
        except _HUB_ERRORS as err:
            raise self._error(err) from None
        path = Path(local)
        size = path.stat().st_size
        sha256, sha1 = file_digests(path)
        expected = item.sha256 or item.git_sha1
        actual = sha256 if item.sha256 else sha1
        if size != item.size or actual != expected:
            path.unlink()
            raise IntegrityError(
                f"{item.path}: downloaded bytes do not match the Hub's {'sha256' if item.sha256 else 'git blob id'} "
                f"at {self.revision[:12]}; the file was discarded, re-run to fetch it again"
            )
        progress.advance(item.path, max(size - reported[0], 0))
        progress.finish(item.path)
        return sha256, size
