"""``ms4fleet weights fetch|verify|stage`` as commands: inventory-driven fetch, exit codes, one-line errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from hubserver import synthetic_checkpoint
from weights_world import HubWorld

from ms4fleet import paths
from ms4fleet.catalog import model_profiles
from ms4fleet.weights.cli import main

PROFILE = model_profiles()["mistral-small-4-fp8"]


def _inventory(tmp_path: Path, revision: str, token_file: str) -> Path:
    doc = {
        "all": {
            "hosts": {"gpu-a": {"ansible_host": "10.0.0.1", "ms4fleet_gpu": {"kind": "h200-sxm", "count": 2}}},
            "vars": {
                "ms4fleet_weights": {
                    "source": "hub",
                    "revision": revision,
                    "dir": str(tmp_path / "srv"),
                    "hf_token": {"file": token_file},
                }
            },
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_fetch_from_inventory_host_then_verify(
    hub_world: HubWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = hub_world.hub.add_repo(PROFILE.repo_id, gated=True)
    repo.granted_tokens.add(hub_world.token.reveal())
    revision = repo.add_commit(synthetic_checkpoint(seed=5))
    inventory = _inventory(tmp_path, revision, hub_world.token_ref.file or "")
    fetch = ["weights", "fetch", "--inventory", str(inventory), "--host", "gpu-a", "--owner", "nobody"]
    fetch += ["--endpoint", hub_world.hub.url]
    code = main(fetch)
    out = capsys.readouterr().out
    dest = Path(paths.model_dir(str(tmp_path / "srv"), PROFILE, revision))
    assert code == 0 and out.startswith(f"{dest}: fetched, 4 files verified")
    assert dest.stat().st_uid == 65534

    assert main(["weights", "verify", str(dest), "--revision", revision]) == 0
    assert main(["weights", "verify", str(dest), "--revision", "0" * 40]) == 1
    os.chmod(dest, 0o755)
    (dest / "params.json").unlink()
    assert main(["weights", "verify", str(dest)]) == 1
    assert "params.json: missing" in capsys.readouterr().err

    # The fetch repairs it; the gated error path is one line naming the page.
    assert main(fetch) == 0
    assert "repaired" in capsys.readouterr().out


def test_fetch_errors_are_one_line(hub_world: HubWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = hub_world.hub.add_repo(PROFILE.repo_id, gated=True)  # the token was never granted
    revision = repo.add_commit(synthetic_checkpoint(seed=6))
    base = [
        "weights",
        "fetch",
        "--profile",
        PROFILE.id,
        "--dest",
        str(tmp_path / "d"),
        "--endpoint",
        hub_world.hub.url,
        "--token-file",
        hub_world.token_ref.file or "",
    ]
    assert main([*base, "--revision", revision]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"ms4fleet weights fetch: {PROFILE.repo_id}: the token lacks access: accept the terms on the model page "
        f"{hub_world.hub.url}/{PROFILE.repo_id} (HTTP 403)"
    )
    assert main([*base, "--revision", "main"]) == 2
    assert "is not pinned: use a 40-character commit hash" in capsys.readouterr().err
    assert main(["weights", "fetch", "--profile", "nope", "--revision", revision]) == 2
    assert "--profile 'nope' is not in the catalog" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_stage_checks_the_controller_before_fetching(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("hf_x")
    inventory = _inventory(tmp_path, "5e" * 20, str(token))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rsync").symlink_to(str(shutil.which("rsync")))
    monkeypatch.setenv("PATH", str(bin_dir))  # rsync but no ssh, and gpu-a is reached over SSH
    assert main(["weights", "stage", str(inventory), "--staging-dir", str(tmp_path / "staging")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "ms4fleet: controller: ssh not found on PATH (needed for weights staging over SSH): "
        "install it with `apt-get install openssh-client`"
    ]
    assert not (tmp_path / "staging").exists()
