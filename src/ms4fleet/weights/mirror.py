"""Weights from an internal HTTP(S) mirror: a static tree of verified weights directories.

Layout: ``<mirror_url>/<repo_id>/<revision>/`` holds the files and ``.ms4fleet/manifest.json``, i.e. a
finalized weights directory copied (or served) as is. Files are fetched with httpx and resumed with Range
requests; each file is checked against the manifest's size and sha256 before it counts.

+ ``MirrorSource(base_url, repo_id, revision, token=None)``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx

from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights.errors import SourceError
from ms4fleet.weights.manifest import Manifest
from ms4fleet.weights.secret import Secret
from ms4fleet.weights.source import RemoteFile, SourceKind
from ms4fleet.weights.transfer import RETRIES, Progress, http_download

TIMEOUT = httpx.Timeout(30.0, read=120.0)


class MirrorSource:
    kind: SourceKind = "mirror"

    def __init__(
        self, base_url: str, repo_id: str, revision: str, token: Secret | None = None, retries: int = RETRIES
    ) -> None:
        self.repo_id = repo_id
        self.retries = retries
        self.revision = revision
        self.root = f"{base_url.rstrip('/')}/{repo_id}/{revision}"
        headers = {"Authorization": f"Bearer {token.reveal()}"} if token is not None else {}
        # HTTP/1.1 with no compression: bytes are counted and resumed as the file has them.
        self._client = httpx.Client(
            headers={**headers, "Accept-Encoding": "identity"}, timeout=TIMEOUT, follow_redirects=True
        )

    def describe(self) -> str:
        return self.root

    def close(self) -> None:
        self._client.close()

    def url(self, rel: str) -> str:
        return f"{self.root}/{quote(rel)}"

    def list_files(self) -> list[RemoteFile]:
        url = self.url(f"{hv.META_DIR}/{hv.MANIFEST_NAME}")
        try:
            response = self._client.get(url)
        except httpx.TransportError as err:
            raise SourceError(f"mirror: cannot reach {url} ({type(err).__name__})") from None
        if response.status_code == 404:
            raise SourceError(
                f"mirror: no manifest at {url}: the mirror lacks {self.repo_id} at revision {self.revision}"
            )
        if response.status_code in (401, 403):
            raise SourceError(f"mirror: {url} refused access (HTTP {response.status_code})")
        if response.status_code != 200:
            raise SourceError(f"mirror: {url} answered HTTP {response.status_code}")
        try:
            manifest = Manifest.model_validate_json(response.content)
        except ValueError as err:
            raise SourceError(f"mirror: {url} is not a valid manifest ({str(err).splitlines()[0]})") from None
        if (manifest.repo, manifest.revision) != (self.repo_id, self.revision):
            raise SourceError(
                f"mirror: {url} describes {manifest.repo} at {manifest.revision}, not {self.repo_id} at {self.revision}"
            )
        return [RemoteFile(f.path, f.size, sha256=f.sha256) for f in manifest.files]

    def fetch(self, item: RemoteFile, staging: Path, progress: Progress) -> tuple[str, int]:
        assert item.sha256 is not None, "mirror manifests always carry sha256"
        url = self.url(item.path)
        received = http_download(
            self._client, url, staging, item.path, item.size, item.sha256, progress, retries=self.retries
        )
        return item.sha256, received
