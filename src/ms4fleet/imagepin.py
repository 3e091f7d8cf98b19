"""Pinning the vLLM image at release time: a tag is resolved once, on the controller, to the manifest digest
the registry serves for it, and the release (its units' ``docker run``) names ``name@sha256:<digest>``. A
rollback then restores exactly the image the previous release ran, wherever the tag has moved since.

+ ``resolve(ref, registry_url=None, allow_insecure=False)``: ``name@sha256:...`` for a tagged reference, from
  the registry (Docker Registry HTTP API v2: ``GET /v2/<name>/manifests/<tag>`` with the OCI and Docker
  manifest types accepted; ``Docker-Content-Digest`` must be the sha256 of the bytes served; an anonymous
  Bearer token is fetched where the registry asks for one). A reference that already has a digest is returned
  as it is, with no request. https only, unless ``registry_url`` is an http:// one the inventory allows.
+ ``pin_config(config, archive_id=None)``: the host's config with ``runtime.image`` pinned (the archive's image
  id where the host loads an archive instead of pulling); native runtimes are returned unchanged. A host's
  failure is a ``ConfigError``: one line naming the host and the image, before any host is touched.
+ ``pin_configs(items)``: the same for a fleet, one resolution per distinct image and registry.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import httpx

from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.values import image_version

# The manifest types a multi-platform or single image may be served as (the index/list first: its digest is
# what `docker pull` records for a multi-platform tag).
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
TIMEOUT_S = 30.0
# Docker Hub's names: a reference without a registry is Docker Hub's; its API host is not its name.
_HUB = "docker.io"
_HUB_API = "registry-1.docker.io"
_DIGEST = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class PinError(ValueError):
    """The image cannot be pinned: one line naming the image and what to do."""


def split(ref: str) -> tuple[str, str, str | None, str | None]:
    """``(registry, repository, tag, digest)`` of a reference, as Docker reads it: no registry means Docker
    Hub, where a one-part name is under ``library/``."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = name[colon + 1 :] if colon > slash else None
    name = name[:colon] if colon > slash else name
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = _HUB, name
    if registry == _HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository, tag, digest or None


def resolve(
    ref: str,
    registry_url: str | None = None,
    allow_insecure: bool = False,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """``ref`` pinned to the manifest digest its registry serves now (``registry_url``: ask that registry, a
    mirror of the reference's, instead)."""
    registry, repository, tag, digest = split(ref)
    if digest is not None:
        return ref
    base = (registry_url or f"https://{_HUB_API if registry == _HUB else registry}").rstrip("/")
    if urlsplit(base).scheme != "https" and not allow_insecure:
        raise PinError(
            f"image {ref}: the registry {base} is plain http: use https, or set runtime.registry_allow_insecure: true"
        )
    url = f"{base}/v2/{repository}/manifests/{tag or 'latest'}"
    where = f"image {ref}: {url}"
    headers = {"Accept": ", ".join(MANIFEST_TYPES)}
    try:
        with httpx.Client(timeout=TIMEOUT_S, transport=transport, follow_redirects=False) as client:
            response = client.get(url, headers=headers)
            if response.status_code == 401:
                token = _token(client, response.headers.get("www-authenticate", ""), allow_insecure, where)
                response = client.get(url, headers={**headers, "Authorization": f"Bearer {token}"})
    except httpx.HTTPError as err:
        raise PinError(
            f"{where}: {type(err).__name__}: {err or 'no answer'}: check that the controller reaches the registry"
        ) from None
    if response.status_code == 404:
        raise PinError(f"{where}: no such tag (404): push the image, or name a tag the registry has")
    if response.status_code != 200:
        raise PinError(f"{where}: HTTP {response.status_code}: the registry refused to serve the manifest")
    body = hashlib.sha256(response.content).hexdigest()
    served = response.headers.get("docker-content-digest", f"sha256:{body}")
    if not _DIGEST.match(served) or served != f"sha256:{body}":
        raise PinError(
            f"{where}: the manifest's bytes hash to sha256:{body[:12]}..., not the digest the registry names "
            f"({served[:19]}...): refusing an image that cannot be pinned"
        )
    name = ref.partition("@")[0]
    return f"{name[: len(name) - len(tag) - 1] if tag else name}@{served}"


def _token(client: httpx.Client, challenge: str, allow_insecure: bool, where: str) -> str:
    """An anonymous pull token from the realm a ``Bearer`` challenge names (Docker Hub asks for one)."""
    scheme, _, params = challenge.partition(" ")
    fields = dict(_CHALLENGE.findall(params))
    realm = fields.pop("realm", "")
    if scheme.lower() != "bearer" or not realm:
        raise PinError(f"{where}: the registry asks for credentials (401 {scheme or 'without a challenge'})")
    if urlsplit(realm).scheme != "https" and not allow_insecure:
        raise PinError(f"{where}: the registry's token service {realm} is plain http: refusing it")
    response = client.get(realm, params=fields)
    try:
        data = response.json() if response.status_code == 200 else {}
    except ValueError:
        data = {}
    token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise PinError(f"{where}: no pull token from {realm} (HTTP {response.status_code}): the image may be private")
    return token


def pin_config(
    config: HostConfig, archive_id: str | None = None, resolver: Callable[[HostConfig], str] | None = None
) -> HostConfig:
    """``config`` with its image pinned: the archive's image id when the host loads ``archive_id``'s archive,
    else the registry's digest. The vLLM release the tag named stays the runtime's label (``vllm_version``)."""
    runtime = config.runtime
    if runtime.kind != "docker":
        return config
    if archive_id is not None:
        if not _DIGEST.match(archive_id):
            raise ConfigError(config.name, "", f"image archive id {archive_id!r} is not sha256:<64 hex>")
        pinned = archive_id
    else:
        pinned = (resolver or _resolve_for)(config)
    if pinned == runtime.image:
        return config
    label = image_version(runtime.image) or runtime.vllm_version
    return config.model_copy(update={"runtime": runtime.model_copy(update={"image": pinned, "vllm_version": label})})


def _resolve_for(config: HostConfig) -> str:
    runtime = config.runtime
    try:
        return resolve(runtime.image, runtime.registry_url, runtime.registry_allow_insecure)
    except PinError as err:
        raise ConfigError(config.name, "", str(err)) from None


def pin_configs(items: Iterable[tuple[HostConfig, str | None]]) -> dict[str, HostConfig]:
    """Each host's pinned config (``items``: config and the image id of the archive it loads, if any); an
    image is resolved once for all the hosts that name it through the same registry."""
    resolved: dict[tuple[str, str | None, bool], str] = {}

    def cached(config: HostConfig) -> str:
        r = config.runtime
        key = (r.image, r.registry_url, r.registry_allow_insecure)
        if key not in resolved:
            resolved[key] = _resolve_for(config)
        return resolved[key]

    return {config.name: pin_config(config, archive_id, cached) for config, archive_id in items}
