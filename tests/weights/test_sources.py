"""Mirror and local-path sources, interrupted fetches, and the disk-space preflight."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest
from weights_world import INCLUDE, PROFILE, REPO_ID, WANTED, HubWorld

from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights.errors import DiskSpaceError, IntegrityError, SourceError
from ms4fleet.weights.fetch import fetch_weights
from ms4fleet.weights.hub import HubSource
from ms4fleet.weights.localpath import PathSource
from ms4fleet.weights.mirror import MirrorSource
from ms4fleet.weights.preflight import RESERVE_MIN

SHARD = "consolidated-00001-of-00002.safetensors"


def _hub_fetch(world: HubWorld, dest: Path) -> None:
    source = HubSource(REPO_ID, world.pinned, world.token, endpoint=world.hub.url)
    fetch_weights(source, dest, profile=PROFILE, include=INCLUDE)


@pytest.fixture
def mirror(hub_world: HubWorld, tmp_path: Path) -> Path:
    """A mirror tree holding the pinned revision, served at ``<hub>/mirror``."""
    fetched = tmp_path / "seed" / PROFILE
    _hub_fetch(hub_world, fetched)
    root = tmp_path / "mirror"
    shutil.copytree(fetched, root / REPO_ID / hub_world.pinned)
    hub_world.hub.mirror_root = root
    hub_world.hub.clear()
    return root


def test_mirror_fetch_verifies_and_matches_the_hub_manifest(hub_world: HubWorld, mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "models" / PROFILE
    source = MirrorSource(f"{hub_world.hub.url}/mirror", REPO_ID, hub_world.pinned, allow_insecure=True)
    result = fetch_weights(source, dest, profile=PROFILE, include=INCLUDE)
    assert result.action == "fetched" and set(result.fetched) == WANTED
    for rel in WANTED:
        assert (dest / rel).read_bytes() == hub_world.files[rel]
    served = {h.path.split(hub_world.pinned + "/", 1)[1] for h in hub_world.hub.gets()}
    assert served == WANTED | {".ms4fleet/manifest.json"}
    mirrored = (mirror / REPO_ID / hub_world.pinned / ".ms4fleet/manifest.json").read_text()
    assert hv.load_manifest(str(dest))[0]["files"] == json.loads(mirrored)["files"]


def test_mirror_drop_resumes_at_the_exact_byte(hub_world: HubWorld, mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "models" / PROFILE
    size, cut = len(hub_world.files[SHARD]), 1_234_567
    hub_world.hub.drop_after(SHARD, cut)
    source = MirrorSource(f"{hub_world.hub.url}/mirror", REPO_ID, hub_world.pinned, allow_insecure=True)
    result = fetch_weights(source, dest, profile=PROFILE, include=INCLUDE)
    gets = hub_world.hub.gets(SHARD)
    assert [(h.range, h.body_bytes) for h in gets] == [
        (f"bytes=0-{size - 1}", cut),
        (f"bytes={cut}-{size - 1}", size - cut),
    ]
    assert result.bytes_transferred == sum(len(hub_world.files[r]) for r in WANTED)


def test_mirror_without_range_support_restarts_the_file(hub_world: HubWorld, mirror: Path, tmp_path: Path) -> None:
    size, cut = len(hub_world.files[SHARD]), 1_000_000
    hub_world.hub.ignore_range = True
    hub_world.hub.drop_after(SHARD, cut)
    dest = tmp_path / "models" / PROFILE
    fetch_weights(
        MirrorSource(f"{hub_world.hub.url}/mirror", REPO_ID, hub_world.pinned, allow_insecure=True),
        dest,
        profile=PROFILE,
        include=INCLUDE,
    )
    assert [(h.status, h.body_bytes) for h in hub_world.hub.gets(SHARD)] == [(200, cut), (200, size)]
    assert (dest / SHARD).read_bytes() == hub_world.files[SHARD]


def test_mirror_redirect_to_another_host_does_not_carry_the_token(
    hub_world: HubWorld, mirror: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "models" / PROFILE
    source = MirrorSource(
        f"{hub_world.hub.url}/mirror-redirect", REPO_ID, hub_world.pinned, token=hub_world.token, allow_insecure=True
    )
    fetch_weights(source, dest, profile=PROFILE, include=INCLUDE)
    assert hv.verify(str(dest), full=True)["ok"]
    hops: dict[str, set[str]] = {}
    for hit in hub_world.hub.hits:
        hops.setdefault(hit.path.split("/")[1], set()).add(hit.token)
    assert hops == {"mirror-redirect": {"valid"}, "mirror": {"none"}}


def test_interrupted_fetch_leaves_nothing_that_verifies_and_rerun_resumes(
    hub_world: HubWorld, mirror: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "models" / PROFILE
    cut = 2_000_000
    hub_world.hub.drop_after(SHARD, cut)
    source = MirrorSource(f"{hub_world.hub.url}/mirror", REPO_ID, hub_world.pinned, retries=0, allow_insecure=True)
    with pytest.raises(SourceError, match="re-run to resume"):
        fetch_weights(source, dest, profile=PROFILE, include=INCLUDE, workers=1)
    assert not dest.exists()
    staging = Path(hv.staging_dir(str(dest)))
    assert not hv.verify(str(staging))["ok"]
    hub_world.hub.clear()

    result = fetch_weights(source, dest, profile=PROFILE, include=INCLUDE)
    assert result.action == "resumed"
    shard_gets = hub_world.hub.gets(SHARD)
    assert [h.range for h in shard_gets] == [f"bytes={cut}-{len(hub_world.files[SHARD]) - 1}"]
    # Files completed before the interruption were not sent again.
    assert SHARD in result.fetched
    assert result.bytes_transferred == sum(len(hub_world.files[r]) for r in result.fetched) - cut
    assert hv.verify(str(dest), full=True)["ok"] and not staging.exists()


def test_hub_failure_midway_then_rerun_fetches_only_what_is_missing(hub_world: HubWorld, tmp_path: Path) -> None:
    dest = tmp_path / "models" / PROFILE
    tekken = hub_world.repo.commits[hub_world.pinned]["tekken.json"].sha256
    hub_world.hub.fail_next(tekken, 500)
    with pytest.raises(SourceError, match="HTTP 500"):
        _hub_fetch(hub_world, dest)
    assert not dest.exists()
    # What a killed huggingface_hub download leaves: a uniquely named temporary file it never reuses.
    downloads = Path(hv.staging_dir(str(dest))) / ".cache" / "huggingface" / "download"
    leftover = downloads / f"tekken.json.{tekken}.0123abcd.incomplete"
    leftover.write_bytes(b"x" * 50_000)
    hub_world.hub.clear()
    _hub_fetch(hub_world, dest)
    assert [h.path for h in hub_world.hub.gets()] == [f"/cdn/{tekken}?repo={REPO_ID}"]
    assert not leftover.exists()


def test_local_path_fetch_and_corrupt_source_refused(hub_world: HubWorld, mirror: Path, tmp_path: Path) -> None:
    shared = mirror / REPO_ID / hub_world.pinned  # as an NFS mount would present it
    dest = tmp_path / "models" / PROFILE
    result = fetch_weights(PathSource(shared, REPO_ID, hub_world.pinned), dest, profile=PROFILE, include=INCLUDE)
    assert set(result.fetched) == WANTED and hv.verify(str(dest), full=True)["ok"]

    hv.make_writable_dirs(str(shared))
    (shared / SHARD).chmod(0o644)
    data = bytearray((shared / SHARD).read_bytes())
    data[-1] ^= 0xFF
    (shared / SHARD).write_bytes(bytes(data))
    other = tmp_path / "models" / "other"
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        fetch_weights(PathSource(shared, REPO_ID, hub_world.pinned), other, profile=PROFILE, include=INCLUDE)
    assert not other.exists()

    with pytest.raises(SourceError, match="holds .* not .* at " + "0" * 40):
        fetch_weights(PathSource(shared, REPO_ID, "0" * 40), other, profile=PROFILE, include=INCLUDE)


Usage = namedtuple("Usage", "total used free")


def test_disk_full_preflight_refuses_before_any_byte(hub_world: HubWorld, tmp_path: Path) -> None:
    dest = tmp_path / "models" / PROFILE
    source = HubSource(REPO_ID, hub_world.pinned, hub_world.token, endpoint=hub_world.hub.url)
    need = sum(len(hub_world.files[r]) for r in WANTED) + RESERVE_MIN
    with pytest.raises(DiskSpaceError, match=r"not enough disk space: .* free on .*needed"):
        fetch_weights(source, dest, profile=PROFILE, include=INCLUDE, disk_usage=lambda _p: Usage(need, 0, need - 1))
    assert [h.path.split("?")[0].rsplit("/", 1)[0] for h in hub_world.hub.hits] == [f"/api/models/{REPO_ID}/tree"]
    assert not dest.exists() and not Path(hv.staging_dir(str(dest))).exists()
    # Exactly enough is accepted.
    fetch_weights(source, dest, profile=PROFILE, include=INCLUDE, disk_usage=lambda _p: Usage(need, 0, need))
    assert hv.verify(str(dest))["ok"]


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the injected disk_usage case covers the logic")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_on_a_real_small_filesystem(hub_world: HubWorld, small_tmpfs: Path) -> None:
    dest = small_tmpfs / "models" / PROFILE
    source = HubSource(REPO_ID, hub_world.pinned, hub_world.token, endpoint=hub_world.hub.url)
    with pytest.raises(DiskSpaceError, match=f"free on {small_tmpfs}"):
        fetch_weights(source, dest, profile=PROFILE, include=INCLUDE)
    assert not any(h.path.startswith(("/cdn/", f"/{REPO_ID}/resolve")) for h in hub_world.hub.hits)
    assert not Path(hv.staging_dir(str(dest))).exists()
