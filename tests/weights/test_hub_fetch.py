"""Fetching from the Hub-compatible server through huggingface_hub's real client."""

from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hubserver import synthetic_checkpoint
from huggingface_hub import HfApi, constants, snapshot_download
from weights_world import INCLUDE, PROFILE, REPO_ID, WANTED, HubWorld

from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights.errors import SourceError, WeightsError
from ms4fleet.weights.fetch import fetch_weights
from ms4fleet.weights.hub import HubSource
from ms4fleet.weights.secret import Secret


def _fetch(world: HubWorld, dest: Path, revision: str | None = None, token: Secret | None = None):
    source = HubSource(REPO_ID, revision or world.pinned, token or world.token, endpoint=world.hub.url)
    return fetch_weights(source, dest, profile=PROFILE, include=INCLUDE)


def test_pinned_revision_fetch_gets_only_native_files_with_hub_sha256(hub_world: HubWorld, tmp_path: Path) -> None:
    dest = tmp_path / "models" / PROFILE
    result = _fetch(hub_world, dest)

    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert on_disk == WANTED | {".ms4fleet/manifest.json", ".ms4fleet/stamp.json"}
    for rel in WANTED:
        # The pinned commit's bytes, not main's (which differ: seed 2).
        assert (dest / rel).read_bytes() == hub_world.files[rel]
    manifest = json.loads((dest / ".ms4fleet/manifest.json").read_text())
    assert manifest["revision"] == hub_world.pinned and manifest["repo"] == REPO_ID
    lfs = {e.path: e for f in hub_world.repo.commits[hub_world.pinned].values() for e in [f] if e.lfs}
    for entry in manifest["files"]:
        if entry["path"] in lfs:
            assert entry["sha256"] == lfs[entry["path"]].sha256
    assert result.action == "fetched" and set(result.fetched) == WANTED
    # Read-only once verified; directory sealed too.
    assert all(stat.S_IMODE((dest / rel).stat().st_mode) == 0o444 for rel in WANTED)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o555
    assert not Path(hv.staging_dir(str(dest))).exists()
    # HF-format files never crossed the wire; LFS bytes came from the CDN host without the token.
    fetched_paths = " ".join(h.path for h in hub_world.hub.hits)
    for unwanted in ("model-00001", "config.json", "tokenizer.json", "README.md"):
        assert unwanted not in fetched_paths
    cdn = [h for h in hub_world.hub.hits if h.path.startswith("/cdn/")]
    assert len(cdn) == 3 and all(h.token == "none" for h in cdn)
    assert hv.verify(str(dest), full=True, repo=REPO_ID, revision=hub_world.pinned)["ok"]


def test_second_fetch_is_a_no_op_without_network(hub_world: HubWorld, tmp_path: Path) -> None:
    dest = tmp_path / "models" / PROFILE
    _fetch(hub_world, dest)
    hub_world.hub.clear()
    result = _fetch(hub_world, dest)
    assert result.action == "present" and result.hashed == ()
    assert hub_world.hub.hits == []


@pytest.mark.parametrize("granted", [False, True], ids=["403-token-without-access", "401-no-token"])
def test_gated_repo_errors_are_translated(hub_world: HubWorld, tmp_path: Path, granted: bool) -> None:
    dest = tmp_path / "models" / PROFILE
    if granted:
        source = HubSource(REPO_ID, hub_world.pinned, None, endpoint=hub_world.hub.url)
        expected = "401"
    else:
        source = HubSource(REPO_ID, hub_world.pinned, Secret("hf_" + "0" * 32), endpoint=hub_world.hub.url)
        expected = "403"
    with pytest.raises(SourceError) as err:
        fetch_weights(source, dest, profile=PROFILE, include=INCLUDE)
    text = str(err.value)
    assert f"accept the terms on the model page {hub_world.hub.url}/{REPO_ID}" in text
    assert f"HTTP {expected}" in text
    if not granted:
        assert "the token lacks access: accept the terms on the model page" in text
    assert "\n" not in text
    assert not dest.exists() and not Path(hv.staging_dir(str(dest))).exists()


def test_unknown_revision_and_repo_and_bad_token(hub_world: HubWorld, tmp_path: Path) -> None:
    dest = tmp_path / "models" / PROFILE
    with pytest.raises(SourceError, match=r"revision f{40} not found"):
        _fetch(hub_world, dest, revision="f" * 40)
    source = HubSource("mistralai/Nope", hub_world.pinned, hub_world.token, endpoint=hub_world.hub.url)
    with pytest.raises(SourceError, match="repository not found"):
        fetch_weights(source, dest, profile=PROFILE, include=INCLUDE)
    source = HubSource(REPO_ID, hub_world.pinned, Secret("hf_invalid"), endpoint=hub_world.hub.url)
    with pytest.raises(SourceError, match="token was rejected"):
        fetch_weights(source, dest, profile=PROFILE, include=INCLUDE)
    assert not dest.exists()


@pytest.mark.slow
def test_connection_dropped_mid_file_is_resumed_with_range(hub_world: HubWorld, tmp_path: Path) -> None:
    # huggingface_hub writes in DOWNLOAD_CHUNK_SIZE (10 MiB) pieces and resumes after the last whole one.
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    files = synthetic_checkpoint(seed=3, shard_bytes=3 * chunk)
    revision = hub_world.repo.add_commit(files, ref="big")
    shard = "consolidated-00001-of-00002.safetensors"
    size, cut = len(files[shard]), chunk + chunk // 2
    hub_world.hub.drop_after(shard, cut)
    dest = tmp_path / "models" / PROFILE
    _fetch(hub_world, dest, revision=revision)

    sha256 = hub_world.repo.commits[revision][shard].sha256
    gets = [h for h in hub_world.hub.hits if h.method == "GET" and sha256 in h.path]
    assert len(gets) == 2 and gets[0].body_bytes == cut and gets[0].range is None
    assert gets[1].range == f"bytes={chunk}-" and gets[1].status == 206
    retransferred = sum(h.body_bytes for h in gets) - size
    assert 0 < retransferred < chunk
    assert (dest / shard).read_bytes() == files[shard]


def test_flipped_byte_and_missing_file_refetch_only_those(hub_world: HubWorld, tmp_path: Path) -> None:
    dest = tmp_path / "models" / PROFILE
    _fetch(hub_world, dest)
    flipped, missing = "consolidated-00001-of-00002.safetensors", "tekken.json"
    os.chmod(dest, 0o755)
    os.chmod(dest / flipped, 0o644)
    with (dest / flipped).open("r+b") as handle:
        handle.seek(12345)
        byte = handle.read(1)
        handle.seek(12345)
        handle.write(bytes([byte[0] ^ 0x01]))
    (dest / missing).unlink()

    report = hv.verify(str(dest))
    assert not report["ok"]
    assert {b["path"]: b["reason"] for b in report["bad"]} == {flipped: "sha256 mismatch", missing: "missing"}
    # Only the changed file was hashed: the others' stat matched the stamp.
    assert report["hashed"] == [flipped]

    hub_world.hub.clear()
    result = _fetch(hub_world, dest)
    assert result.action == "repaired" and sorted(result.fetched) == sorted([flipped, missing])
    downloaded = {h.path for h in hub_world.hub.gets()}
    commit = hub_world.repo.commits[hub_world.pinned]
    assert downloaded == {f"/cdn/{commit[name].sha256}?repo={REPO_ID}" for name in (flipped, missing)}
    assert hv.verify(str(dest), full=True)["ok"]
    assert (dest / flipped).read_bytes() == hub_world.files[flipped]


def test_concurrent_fetches_into_one_dir_wait_and_download_once(hub_world: HubWorld, tmp_path: Path) -> None:
    dest = tmp_path / "models" / PROFILE
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: _fetch(hub_world, dest), range(3)))
    assert sorted(r.action for r in results) == ["fetched", "present", "present"]
    downloads = [h.path for h in hub_world.hub.gets()]
    assert len(downloads) == len(WANTED) == len(set(downloads))


def test_server_answers_the_calls_snapshot_download_and_model_info_make(hub_world: HubWorld, tmp_path: Path) -> None:
    # A branch name makes the client resolve it through the model-info endpoint first.
    api = HfApi(endpoint=hub_world.hub.url, token=hub_world.token.reveal())
    info = api.model_info(REPO_ID, revision="main")
    assert info.sha == hub_world.latest and "params.json" in {s.rfilename for s in info.siblings or []}
    local = snapshot_download(
        REPO_ID,
        revision="main",
        allow_patterns=list(INCLUDE),
        local_dir=tmp_path / "snap",
        cache_dir=tmp_path / "cache",
        token=hub_world.token.reveal(),
        endpoint=hub_world.hub.url,
    )
    got = {p.name for p in Path(local).iterdir() if p.is_file()}
    assert got == WANTED
    assert (
        hv.sha256_file(str(Path(local) / "tekken.json"))
        == hub_world.repo.commits[hub_world.latest]["tekken.json"].sha256
    )


def test_fetch_refuses_to_replace_a_directory_it_did_not_make(hub_world: HubWorld, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "important.db").write_bytes(b"keep me")
    with pytest.raises(WeightsError, match="is not an ms4fleet weights directory"):
        _fetch(hub_world, dest)
    assert (dest / "important.db").read_bytes() == b"keep me" and hub_world.hub.hits == []
