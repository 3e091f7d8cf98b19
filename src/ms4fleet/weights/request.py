"""What to fetch for one host, from its validated config, and the source object that fetches it.

+ ``WeightsRequest``: plain typed fields (repo, revision, patterns, dest, owner, source, token ref).
+ ``request_for_host(config)``: maps a ``HostConfig`` onto it (``weights`` section, catalog profile,
  ``paths.WEIGHTS_OWNER``, ``paths.model_dir``).
+ ``by_files(items, request_of)``: items grouped by the files their requests take (one fetch or tree each).
+ ``open_source(request, endpoint=None)``: reads the token (if the source needs one) and builds the source.
+ ``mirror_for(request)``: the mirror source of a mirror request (the Hub token is never sent to it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

from ms4fleet import paths
from ms4fleet.config import HostConfig
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.manifest import COMMIT, mirror_manifest_url, unpinned_manifest
from ms4fleet.weights.secret import Secret, TokenRef, read_token
from ms4fleet.weights.source import Source, SourceKind

if TYPE_CHECKING:
    from ms4fleet.weights.mirror import MirrorSource

T = TypeVar("T")


@dataclass(frozen=True)
class WeightsRequest:
    profile: str
    repo_id: str
    revision: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    dest: str
    source: SourceKind = "hub"
    owner: str | None = None
    mirror_url: str | None = None
    manifest_sha256: str | None = None
    allow_insecure: bool = False
    path: str | None = None
    token: TokenRef | None = None

    def __post_init__(self) -> None:
        if not COMMIT.match(self.revision):
            raise WeightsError(f"revision {self.revision!r} is not pinned: use a 40-character commit hash")
        if self.source == "mirror" and not self.mirror_url:
            raise WeightsError("mirror_url is required when the source is a mirror")
        if self.source == "mirror" and str(self.mirror_url).startswith("http://") and not self.allow_insecure:
            raise WeightsError(f"mirror {self.mirror_url} is plain http: use https://, or allow_insecure to accept it")
        if self.source == "mirror" and self.manifest_sha256 is None and not self.allow_insecure:
            url = mirror_manifest_url(str(self.mirror_url), self.repo_id, self.revision)
            where = "--manifest-sha256 (or weights.manifest_sha256)"
            raise WeightsError(f"manifest_sha256 {unpinned_manifest(url, where)}")
        if self.source == "path" and not self.path:
            raise WeightsError("path is required when the source is a path")

    def same_files(self, other: WeightsRequest) -> bool:
        """Whether ``other`` wants the same bytes from the same source (so one fetch serves both)."""
        return replace(self, dest="", owner=None) == replace(other, dest="", owner=None)


def by_files(items: Iterable[T], request_of: Callable[[T], WeightsRequest]) -> list[list[T]]:
    """``items`` grouped by the files their requests take (``WeightsRequest.same_files``), each group and the
    groups in the order given: one fetch, or one peer tree, serves a group."""
    groups: list[list[T]] = []
    for item in items:
        group = next((g for g in groups if request_of(g[0]).same_files(request_of(item))), None)
        if group is None:
            groups.append([item])
        else:
            group.append(item)
    return groups


def request_for_host(config: HostConfig) -> WeightsRequest:
    weights = config.weights
    if weights is None:
        raise WeightsError(f"{config.name}: weights section is missing: set ms4fleet_weights with a revision")
    if weights.revision is None or not COMMIT.match(weights.revision):
        raise WeightsError(
            f"{config.name}: weights.revision={weights.revision!r} is not pinned: use a 40-character commit hash "
            "(mirror and path sources are laid out per revision too)"
        )
    profile = config.profile
    token = None
    if weights.hf_token is not None:
        token = TokenRef(file=weights.hf_token.file, env=weights.hf_token.env)
    return WeightsRequest(
        profile=profile.id,
        repo_id=profile.repo_id,
        revision=weights.revision,
        include=profile.include_patterns,
        exclude=profile.exclude_patterns,
        dest=paths.model_dir(weights.dir, profile, weights.revision),
        source=weights.source,
        owner=paths.WEIGHTS_OWNER,
        mirror_url=weights.mirror_url,
        manifest_sha256=weights.manifest_sha256,
        allow_insecure=weights.allow_insecure,
        path=weights.path,
        token=token,
    )


def open_source(request: WeightsRequest, endpoint: str | None = None) -> tuple[Source, Secret | None]:
    """Build the source and return the secret it holds (to scrub from logs); a Hub source reads its token
    now, so a missing or exposed token fails before anything is transferred."""
    # The sources (the Hub client above all) load only to fetch: planning a fleet reads requests, never sources.
    from ms4fleet.weights.hub import HubSource
    from ms4fleet.weights.localpath import PathSource

    if request.source == "hub":
        secret = read_token(request.token) if request.token is not None else None
        return HubSource(request.repo_id, request.revision, secret, endpoint=endpoint), secret
    if request.source == "mirror":
        return mirror_for(request), None
    assert request.path is not None
    return PathSource(request.path, request.repo_id, request.revision), None


def mirror_for(request: WeightsRequest) -> MirrorSource:
    """The mirror of a ``source: mirror`` request, checked against its pinned manifest. The Hub token is never
    sent to a mirror: it is a different service with its own access control."""
    from ms4fleet.weights.mirror import MirrorSource

    assert request.mirror_url is not None
    return MirrorSource(
        request.mirror_url,
        request.repo_id,
        request.revision,
        manifest_sha256=request.manifest_sha256,
        allow_insecure=request.allow_insecure,
    )
