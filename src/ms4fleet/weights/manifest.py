"""The weights manifest: what a verified weights directory holds, as the host-side verifier reads it.

A manifest is ``<dir>/.ms4fleet/manifest.json``; its format is defined by
``ms4fleet.hostside.weights_verify`` (stdlib, shipped to hosts) and modelled here for the core.

+ ``FileEntry(path, size, sha256)`` and ``Manifest(repo, revision, profile, source, files)``.
+ ``write_manifest(directory, manifest)``: atomic write (``manifest_bytes``); ``read_manifest(directory)``: parse
  and validate.
+ ``mirror_manifest_url(base_url, repo_id, revision)``; ``unpinned_manifest(url, field)``: the one line refusing a
  mirror without ``manifest_sha256`` (unless ``allow_insecure``).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights.errors import WeightsError

COMMIT = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    size: int = Field(ge=0)
    sha256: str

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        try:
            hv.check_relpath(path)
        except hv.ManifestError as err:
            raise ValueError(str(err)) from None
        return path

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not SHA256.match(value):
            raise ValueError(f"{value!r} is not a lowercase hex sha256")
        return value


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    repo: str
    revision: str
    profile: str
    source: Literal["hub", "mirror", "path"]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    files: tuple[FileEntry, ...] = Field(min_length=1)

    @field_validator("revision")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if not COMMIT.match(value):
            raise ValueError(f"{value!r} is not a 40-character commit hash")
        return value

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def mirror_manifest_url(base_url: str, repo_id: str, revision: str) -> str:
    """Where a mirror serves one revision's manifest (``ms4fleet.weights.mirror``'s layout)."""
    return f"{base_url.rstrip('/')}/{repo_id}/{revision}/{hv.META_DIR}/{hv.MANIFEST_NAME}"


def unpinned_manifest(url: str, field: str) -> str:
    """Why a mirror without a manifest pin is refused and how to pin it (one line; ``field`` is where the pin
    goes: the inventory's ``weights.manifest_sha256`` or the CLI's ``--manifest-sha256``)."""
    return (
        f"is required for a mirror source: the mirror's manifest is trusted only through it; set {field} to "
        f"the sha256 of {url} as published (`sha256sum .ms4fleet/manifest.json` in that directory on the mirror), "
        "or set weights.allow_insecure: true to trust an unpinned mirror"
    )


def manifest_bytes(manifest: Manifest) -> bytes:
    """The manifest file's exact bytes (what a mirror serves and ``weights.manifest_sha256`` pins)."""
    return (manifest.model_dump_json(indent=1) + "\n").encode("utf-8")


def write_manifest(directory: Path, manifest: Manifest) -> None:
    path = Path(hv.manifest_path(str(directory)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(manifest_bytes(manifest))
    os.replace(tmp, path)


def read_manifest(directory: Path) -> Manifest:
    try:
        data, _digest = hv.load_manifest(str(directory))
    except hv.ManifestError as err:
        raise WeightsError(str(err)) from None
    try:
        return Manifest.model_validate(data)
    except ValueError as err:
        first = str(err).splitlines()
        raise WeightsError(f"{hv.manifest_path(str(directory))}: {' '.join(first[:3])}") from None
