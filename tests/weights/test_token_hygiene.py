"""The Hub token never lands in a log, a file, an error message, argv or program output."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import synthetic_checkpoint
from weights_world import INCLUDE, PROFILE, REPO_ID, HubWorld

from ms4fleet.catalog import model_profiles
from ms4fleet.weights.errors import SourceError, WeightsError
from ms4fleet.weights.fetch import fetch_weights
from ms4fleet.weights.hub import HubSource
from ms4fleet.weights.secret import MASK, Secret, TokenRef, read_token, scrubbed


@pytest.fixture
def debug_log(tmp_path: Path) -> Iterator[Path]:
    """Everything every library logs, at DEBUG, into a file under tmp_path."""
    path = tmp_path / "logs" / "debug.log"
    path.parent.mkdir()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    root.setLevel(old_level)
    handler.close()


def _files_containing(root: Path, needles: list[bytes], skip: set[Path]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in skip:
            data = path.read_bytes()
            hits += [f"{path}: token {i}" for i, needle in enumerate(needles) if needle in data]
    return hits


def test_no_token_anywhere_after_fetches_failures_and_repairs(
    hub_world: HubWorld, tmp_path: Path, debug_log: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    token = hub_world.token.reveal()
    foreign = "hf_" + "0" * 32  # known to the Hub, not granted this repo
    dest = tmp_path / "models" / PROFILE

    with scrubbed(hub_world.token):
        logging.getLogger("test").warning("token leaked in a message: %s", token)
        hub_world.hub.drop_after("consolidated-00002-of-00002.safetensors", 100_000)
        fetch_weights(
            HubSource(REPO_ID, hub_world.pinned, hub_world.token, hub_world.hub.url),
            dest,
            profile=PROFILE,
            include=INCLUDE,
        )
    errors: list[str] = []
    with scrubbed(Secret(foreign)), pytest.raises(SourceError) as gated:
        fetch_weights(
            HubSource(REPO_ID, hub_world.pinned, Secret(foreign), hub_world.hub.url),
            tmp_path / "models" / "other",
            profile=PROFILE,
            include=INCLUDE,
        )
    errors += [str(gated.value), repr(gated.value)]
    with pytest.raises(SourceError) as rejected:
        fetch_weights(
            HubSource(REPO_ID, hub_world.pinned, Secret("hf_not_known"), hub_world.hub.url),
            tmp_path / "models" / "third",
            profile=PROFILE,
            include=INCLUDE,
        )
    errors += [str(rejected.value), repr(rejected.value)]
    # A failed run leaves huggingface_hub's metadata in the staging dir: scanned below too.
    hub_world.hub.fail_next(hub_world.repo.commits[hub_world.latest]["tekken.json"].sha256, 500)
    with pytest.raises(SourceError):
        fetch_weights(
            HubSource(REPO_ID, hub_world.latest, hub_world.token, hub_world.hub.url),
            tmp_path / "models" / "latest",
            profile=PROFILE,
            include=INCLUDE,
        )
    assert (tmp_path / "models" / "latest.partial" / ".cache").is_dir()

    hub_world.hub.write_log(tmp_path / "logs" / "hub-requests.jsonl")
    out, err = capfd.readouterr()
    log_text = debug_log.read_text()
    assert MASK in log_text and "Trying to resume download" in log_text  # the scrubber and the drop both ran
    needles = [token.encode(), foreign.encode(), b"hf_not_known"]
    token_file = Path(hub_world.token_ref.file or "")
    assert _files_containing(tmp_path, needles, skip={token_file}) == []
    for text in [out, err, *errors]:
        assert not any(n.decode() in text for n in needles)
    # The server saw the token on Hub API calls and never on the CDN host.
    assert {h.token for h in hub_world.hub.hits if h.path.startswith("/cdn/")} == {"none"}
    assert "valid" in {h.token for h in hub_world.hub.hits if h.path.startswith("/api/")}


@pytest.mark.slow
def test_cli_subprocess_reads_the_token_by_reference_only(hub_world: HubWorld, tmp_path: Path) -> None:
    profile = model_profiles()["mistral-small-4-fp8"]
    repo = hub_world.hub.add_repo(profile.repo_id, gated=True)
    repo.granted_tokens.add(hub_world.token.reveal())
    revision = repo.add_commit(synthetic_checkpoint(seed=7))
    dest = tmp_path / "w" / "fp8"
    argv = [
        sys.executable,
        "-m",
        "ms4fleet.weights.cli",
        "weights",
        "fetch",
        "--profile",
        profile.id,
        "--revision",
        revision,
        "--dest",
        str(dest),
        "--token-env",
        "MS4FLEET_TEST_HF_TOKEN",
        "--endpoint",
        hub_world.hub.url,
        "--json",
    ]
    env = {**os.environ, "MS4FLEET_TEST_HF_TOKEN": hub_world.token.reveal(), "HF_HOME": str(tmp_path / "hf-home")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert '"action": "fetched"' in done.stdout
    token = hub_world.token.reveal()
    assert token not in " ".join(argv) and token not in done.stdout + done.stderr
    assert _files_containing(tmp_path, [token.encode()], skip={Path(hub_world.token_ref.file or "")}) == []

    # Without the variable: one clear line, exit 1, nothing fetched.
    env.pop("MS4FLEET_TEST_HF_TOKEN")
    hub_world.hub.clear()
    second = [a if a != str(dest) else str(tmp_path / "w2") for a in argv]
    done = subprocess.run(second, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "ms4fleet weights fetch: token: environment variable MS4FLEET_TEST_HF_TOKEN is unset or empty: "
        "export the READ token"
    )
    assert hub_world.hub.hits == []


def test_token_file_must_be_private_and_single_line(tmp_path: Path) -> None:
    path = tmp_path / "tok"
    path.write_text("hf_abc\n")
    path.chmod(0o644)
    with pytest.raises(WeightsError, match=r"readable by others \(mode 0644\): chmod 600"):
        read_token(TokenRef(file=str(path)))
    path.chmod(0o600)
    assert read_token(TokenRef(file=str(path))).reveal() == "hf_abc"
    assert "hf_abc" not in repr(read_token(TokenRef(file=str(path))))
    path.write_text("hf_abc hf_def\n")
    with pytest.raises(WeightsError, match="exactly one token"):
        read_token(TokenRef(file=str(path)))
    with pytest.raises(WeightsError, match="does not exist"):
        read_token(TokenRef(file=str(tmp_path / "none")))
