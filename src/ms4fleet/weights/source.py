"""What every weights source offers: a listing with sizes and digests at a pinned revision, and a per-file fetch.

+ ``RemoteFile``: one file as the source describes it.
+ ``Source``: the protocol ``HubSource``, ``MirrorSource`` and ``PathSource`` implement.
+ ``select(files, include, exclude)``: the files a profile wants (Hub glob semantics for every source).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from huggingface_hub.utils import filter_repo_objects  # type: ignore[attr-defined]

from ms4fleet.weights.transfer import Progress

SourceKind = Literal["hub", "mirror", "path"]


@dataclass(frozen=True)
class RemoteFile:
    """``sha256`` is known up front for LFS files, mirrors and paths; a small non-LFS Hub file carries its
    git blob id instead (``git_sha1``), checked after download, and its sha256 is computed then."""

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None


class Source(Protocol):
    kind: SourceKind
    repo_id: str
    revision: str

    def describe(self) -> str:
        """Where the bytes come from, for messages (never includes a secret)."""
        ...

    def list_files(self) -> list[RemoteFile]:
        """Every file at the pinned revision."""
        ...

    def fetch(self, item: RemoteFile, staging: Path, progress: Progress) -> tuple[str, int]:
        """Put ``item`` at ``staging/item.path`` and return its verified sha256 and the bytes transferred."""
        ...

    def reclaim(self, staging: Path) -> int:
        """Delete what an interrupted run of this source left in ``staging`` that can never be resumed;
        returns the bytes freed. Called before the disk-space check, under the fetch lock."""
        ...


def select(files: Sequence[RemoteFile], include: Sequence[str], exclude: Sequence[str]) -> list[RemoteFile]:
    return list(
        filter_repo_objects(
            files,
            allow_patterns=list(include) or None,
            ignore_patterns=list(exclude) or None,
            key=lambda f: f.path,
        )
    )
