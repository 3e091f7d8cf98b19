"""Fixtures for the weights tests: a gated repo on the local Hub-compatible server, a token file."""

from __future__ import annotations

import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from hubserver import HubServer, synthetic_checkpoint
from weights_world import REPO_ID, HubWorld

from ms4fleet.weights.secret import TokenRef, read_token


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything resolves a name other than loopback (test traffic stays on this machine)."""
    attempts: list[str] = []
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", "::1", None):
            attempts.append(str(host))
            raise OSError(f"test network guard: {host} is not loopback")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield
    assert attempts == [], f"non-loopback lookups: {attempts}"


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
        # As if HF_ENDPOINT had been set before huggingface_hub was imported (it reads it at import time):
        # no call of the client may leave loopback, including its user-agent registry lookup.
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        repo = hub.add_repo(REPO_ID, gated=True)
        repo.granted_tokens.add(token_value)
        files = synthetic_checkpoint(seed=1)
        pinned = repo.add_commit(files)
        latest = repo.add_commit(synthetic_checkpoint(seed=2))
        ref = TokenRef(file=str(token_file))
        yield HubWorld(hub, repo, pinned, latest, read_token(ref), ref, files)
