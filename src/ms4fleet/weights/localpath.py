"""Weights from a local path or NFS mount holding a finalized weights directory (files + manifest).

Each file is copied (resumably) and checked against the source manifest's size and sha256 while it is
copied, so a corrupted source file is refused rather than propagated.

+ ``PathSource(path, repo_id, revision)``.
"""

from __future__ import annotations

from pathlib import Path

from ms4fleet.weights.errors import SourceError, WeightsError
from ms4fleet.weights.manifest import read_manifest
from ms4fleet.weights.source import RemoteFile, SourceKind
from ms4fleet.weights.transfer import Progress, copy_file


class PathSource:
    kind: SourceKind = "path"

    def __init__(self, path: str | Path, repo_id: str, revision: str) -> None:
        self.path = Path(path)
        self.repo_id = repo_id
        self.revision = revision

    def describe(self) -> str:
        return str(self.path)

    def list_files(self) -> list[RemoteFile]:
        if not self.path.is_dir():
            raise SourceError(f"path: {self.path} is not a directory (is the share mounted?)")
        try:
            manifest = read_manifest(self.path)
        except WeightsError as err:
            raise SourceError(
                f"path: {err}; a path source must be a weights directory made by 'ms4fleet weights fetch'"
            ) from None
        if (manifest.repo, manifest.revision) != (self.repo_id, self.revision):
            raise SourceError(
                f"path: {self.path} holds {manifest.repo} at {manifest.revision}, not {self.repo_id} at {self.revision}"
            )
        return [RemoteFile(f.path, f.size, sha256=f.sha256) for f in manifest.files]

    def reclaim(self, staging: Path) -> int:
        return 0  # partial files here are resumed, not discarded

    def fetch(self, item: RemoteFile, staging: Path, progress: Progress) -> tuple[str, int]:
        assert item.sha256 is not None, "path manifests always carry sha256"
        read = copy_file(self.path / item.path, staging, item.path, item.size, item.sha256, progress)
        return item.sha256, read
