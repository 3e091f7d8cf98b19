"""What the weights tests share: the synthetic repo's names and the ``HubWorld`` the ``hub_world`` fixture
yields (a module of its own, so test modules never import ``conftest`` by name)."""

from __future__ import annotations

from dataclasses import dataclass

from hubserver import HubServer, Repo

from ms4fleet.weights.secret import Secret, TokenRef

REPO_ID = "mistralai/Tiny-Small-4-2603"
PROFILE = "tiny-small-4"
INCLUDE = ("params.json", "consolidated-*.safetensors", "tekken.json")
WANTED = {
    "params.json",
    "consolidated-00001-of-00002.safetensors",
    "consolidated-00002-of-00002.safetensors",
    "tekken.json",
}


@dataclass
class HubWorld:
    hub: HubServer
    repo: Repo
    pinned: str  # an older commit, the one the tests pin
    latest: str  # what "main" points to now
    token: Secret
    token_ref: TokenRef
    files: dict[str, bytes]  # the pinned commit's bytes
