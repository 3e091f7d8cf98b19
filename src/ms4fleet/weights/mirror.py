"""Weights from an internal HTTP(S) mirror: a static tree of verified weights directories.

Layout: ``<mirror_url>/<repo_id>/<revision>/`` holds the files and ``.ms4fleet/manifest.json``, i.e. a
finalized weights directory copied (or served) as is. Files are fetched in Range segments and resumed
(``ranged``); each file is checked against the manifest's size and sha256 before it counts. The manifest
itself is checked against ``manifest_sha256`` from the inventory: the mirror vouches for nothing on its own.
Plain http, redirects to it, and a mirror without that pin are refused unless ``allow_insecure``.

+ ``MirrorSource(base_url, repo_id, revision, token=None, manifest_sha256=None, allow_insecure=False)``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import quote

from ms4fleet.weights.errors import SourceError
from ms4fleet.weights.manifest import Manifest, mirror_manifest_url
from ms4fleet.weights.ranged import HttpSession, ranged_download
from ms4fleet.weights.secret import Secret
from ms4fleet.weights.source import RemoteFile, SourceKind
from ms4fleet.weights.transfer import RETRIES, PartialFile, Progress


class MirrorSource:
    kind: SourceKind = "mirror"

    def __init__(
        self,
        base_url: str,
        repo_id: str,
        revision: str,
        token: Secret | None = None,
        retries: int = RETRIES,
        manifest_sha256: str | None = None,
        allow_insecure: bool = False,
    ) -> None:
        self.manifest_sha256 = manifest_sha256
        self.allow_insecure = allow_insecure
        self.repo_id = repo_id
        self.retries = retries
        self.revision = revision
        self.base_url = base_url
        self.root = f"{base_url.rstrip('/')}/{repo_id}/{revision}"
        self._headers = {"Authorization": f"Bearer {token.reveal()}"} if token is not None else {}

    def describe(self) -> str:
        return self.root

    def url(self, rel: str) -> str:
        return f"{self.root}/{quote(rel)}"

    def list_files(self) -> list[RemoteFile]:
        manifest = Manifest.model_validate_json(self.manifest_body())
        return [RemoteFile(f.path, f.size, sha256=f.sha256) for f in manifest.files]

    def manifest_body(self) -> bytes:
        """The revision's manifest as the mirror serves it, checked against the pin, the repo and the revision."""
        url = mirror_manifest_url(self.base_url, self.repo_id, self.revision)
        try:
            with HttpSession(self._headers, allow_insecure=self.allow_insecure) as session:
                status, body = session.get(url)
        except OSError as err:
            raise SourceError(f"mirror: cannot reach {url} ({type(err).__name__}: {err})") from None
        if status == 404:
            raise SourceError(
                f"mirror: no manifest at {url}: the mirror lacks {self.repo_id} at revision {self.revision}"
            )
        if status in (401, 403):
            raise SourceError(f"mirror: {url} refused access (HTTP {status})")
        if status != 200:
            raise SourceError(f"mirror: {url} answered HTTP {status}")
        digest = hashlib.sha256(body).hexdigest()
        if self.manifest_sha256 is not None and digest != self.manifest_sha256:
            raise SourceError(
                f"mirror: {url} has sha256 {digest}, not the pinned weights.manifest_sha256 {self.manifest_sha256}: "
                "the mirror's copy changed; fetch nothing until the pin or the mirror is corrected"
            )
        try:
            manifest = Manifest.model_validate_json(body)
        except ValueError as err:
            raise SourceError(f"mirror: {url} is not a valid manifest ({str(err).splitlines()[0]})") from None
        if (manifest.repo, manifest.revision) != (self.repo_id, self.revision):
            raise SourceError(
                f"mirror: {url} describes {manifest.repo} at {manifest.revision}, not {self.repo_id} at {self.revision}"
            )
        return body

    def reclaim(self, staging: Path) -> int:
        return 0  # partial files here are resumed, not discarded

    def fetch(self, item: RemoteFile, staging: Path, progress: Progress) -> tuple[str, int]:
        assert item.sha256 is not None, "mirror manifests always carry sha256"
        url = self.url(item.path)
        target = PartialFile(staging, item.path, item.size, item.sha256)
        try:
            progress.start(item.path, item.size, target.offset)
            with HttpSession(self._headers, allow_insecure=self.allow_insecure) as session:
                received = ranged_download(session, url, target, progress, self.retries)
            target.commit()
        except OSError as err:
            raise SourceError(f"{item.path}: {url} failed ({type(err).__name__}: {err}); re-run to resume") from None
        finally:
            target.close()
        progress.finish(item.path)
        return item.sha256, received
