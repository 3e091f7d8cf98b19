"""Pinning the image at release time: a tiny Docker Registry v2 in this process answers for tags; a tag
resolves to the manifest digest it serves, a body that does not hash to the digest named is refused, a
missing tag is one line naming the image, and a digest reference never reaches the network."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.hostplan import host_plan
from ms4fleet.imagepin import MANIFEST_TYPES, PinError, pin_config, pin_configs, resolve, split
from ms4fleet.rollout.release import release_for
from tests.support.fakeregistry import DIGEST, MANIFEST, TOKEN, Registry, serve

REVISION = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"


@pytest.fixture
def registry() -> Iterator[Registry]:
    with serve() as state:
        yield state


def _config(registry_url: str, image: str = "vllm/vllm-openai:v0.32.0", **runtime: Any) -> HostConfig:
    return HostConfig.from_host_data(
        "gpu-1",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_weights": {
                "source": "mirror",
                "mirror_url": "https://m.example",
                "revision": REVISION,
                "manifest_sha256": "ab" * 32,
            },
            "ms4fleet_runtime": {
                "image": image,
                "registry_url": registry_url,
                "registry_allow_insecure": True,
                **runtime,
            },
        },
    )


def test_a_tag_resolves_to_the_manifest_digest_the_registry_serves(registry: Registry) -> None:
    registry.manifests[("vllm/vllm-openai", "v0.32.0")] = (MANIFEST, DIGEST)
    pinned = resolve("vllm/vllm-openai:v0.32.0", registry.url, allow_insecure=True)
    assert pinned == f"vllm/vllm-openai@{DIGEST}"
    (path, headers), *_ = registry.requests
    assert path == "/v2/vllm/vllm-openai/manifests/v0.32.0"
    assert all(kind in headers["Accept"] for kind in MANIFEST_TYPES)


def test_a_bearer_challenge_is_answered_with_an_anonymous_token(registry: Registry) -> None:
    registry.manifests[("vllm/vllm-openai", "v0.32.0")] = (MANIFEST, DIGEST)
    registry.bearer = True
    assert resolve("vllm/vllm-openai:v0.32.0", registry.url, allow_insecure=True) == f"vllm/vllm-openai@{DIGEST}"
    paths = [path for path, _ in registry.requests]
    assert paths[1].startswith("/token?") and "scope=repository%3Avllm%2Fvllm-openai%3Apull" in paths[1]
    assert registry.requests[-1][1]["Authorization"] == f"Bearer {TOKEN}"


def test_a_body_that_does_not_hash_to_the_named_digest_is_refused(registry: Registry) -> None:
    registry.manifests[("vllm/vllm-openai", "v0.32.0")] = (MANIFEST + b" ", DIGEST)
    with pytest.raises(PinError) as err:
        resolve("vllm/vllm-openai:v0.32.0", registry.url, allow_insecure=True)
    message = str(err.value)
    assert "\n" not in message and message.startswith("image vllm/vllm-openai:v0.32.0: ")
    assert "not the digest the registry names" in message and "refusing" in message


def test_a_missing_tag_is_one_line_naming_the_image(registry: Registry) -> None:
    with pytest.raises(ConfigError) as err:
        pin_configs([(_config(registry.url, "vllm/vllm-openai:v9.9.9"), None)])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("gpu-1: image vllm/vllm-openai:v9.9.9: ") and "no such tag (404)" in message


def test_a_digest_reference_is_kept_without_a_request(registry: Registry) -> None:
    ref = f"registry.example:5000/vllm/vllm-openai@{DIGEST}"
    assert resolve(ref, registry.url, allow_insecure=True) == ref
    config = _config(registry.url, f"vllm/vllm-openai@{DIGEST}", vllm_version="0.32.0")
    assert pin_config(config) is config
    assert registry.requests == []


def test_plain_http_needs_the_inventory_to_allow_it(registry: Registry) -> None:
    with pytest.raises(PinError, match=r"plain http: use https, or set runtime\.registry_allow_insecure: true"):
        resolve("vllm/vllm-openai:v0.32.0", registry.url)
    with pytest.raises(ConfigError, match=r"runtime\.registry_url.*plain http"):
        _config(registry.url, registry_allow_insecure=False)
    assert registry.requests == []


def test_docker_hub_names_are_read_as_docker_reads_them() -> None:
    assert split("vllm/vllm-openai:v0.32.0") == ("docker.io", "vllm/vllm-openai", "v0.32.0", None)
    assert split("ubuntu:24.04") == ("docker.io", "library/ubuntu", "24.04", None)
    assert split("localhost:5000/a/b:t") == ("localhost:5000", "a/b", "t", None)
    assert split(f"reg.example:443/x:t@{DIGEST}") == ("reg.example:443", "x", "t", DIGEST)


def test_the_release_and_its_units_name_the_pinned_image(registry: Registry) -> None:
    """One resolution for a fleet's hosts; the units run the digest; the tag's vLLM release stays the label."""
    registry.manifests[("vllm/vllm-openai", "v0.33.1")] = (MANIFEST, DIGEST)
    configs = [_config(registry.url, "vllm/vllm-openai:v0.33.1").model_copy(update={"name": n}) for n in "ab"]
    pinned = pin_configs([(c, None) for c in configs])
    assert len(registry.requests) == 1
    ref = f"vllm/vllm-openai@{DIGEST}"
    assert pinned["a"].runtime.image == ref and pinned["a"].runtime.running_vllm()[0] == "0.33.1"
    plan = host_plan(pinned["a"])
    release = release_for(pinned["a"], plan.serving, host_plan=plan)
    assert release.image == ref and plan.image.ref == ref and plan.image.obtain == "pull"
    for unit in release.units.values():
        assert f" {ref} " in unit and "v0.33.1" not in unit


def test_an_archive_loaded_image_is_pinned_to_the_archive_image_id(registry: Registry) -> None:
    image_id = "sha256:" + "c" * 64
    pinned = pin_config(_config(registry.url), image_id)
    assert pinned.runtime.image == image_id and registry.requests == []
    with pytest.raises(ConfigError, match="is not sha256:<64 hex>"):
        pin_config(_config(registry.url), "sha256:short")
