"""Fixtures for the weights tests: a gated repo on the local Hub-compatible server, a token file."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from hubserver import HubServer, Repo, synthetic_checkpoint

from ms4fleet.weights.secret import Secret, TokenRef, read_token

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


@pytest.fixture
def token_value() -> str:
    return "hf_" + secrets.token_hex(16)


@pytest.fixture
def hub_world(tmp_path: Path, token_value: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubWorld]:
    token_file = tmp_path / "secrets" / "hf-token"
    token_file.parent.mkdir()
    token_file.write_text(token_value + "\n")
    token_file.chmod(0o600)
    with HubServer(known_tokens={token_value, "hf_" + "0" * 32}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        repo = hub.add_repo(REPO_ID, gated=True)
        repo.granted_tokens.add(token_value)
        files = synthetic_checkpoint(seed=1)
        pinned = repo.add_commit(files)
        latest = repo.add_commit(synthetic_checkpoint(seed=2))
        ref = TokenRef(file=str(token_file))
        yield HubWorld(hub, repo, pinned, latest, read_token(ref), ref, files)
