"""``ms4fleet weights stage`` against a simulated fleet: real SSH (key + strict known_hosts), a non-root
user with sudo, rsync and the stdlib verifier on Debian hosts. The Hub is the loopback test server; the
controller fetches once and every host checks its own copy.

This module brings up its own three-host fleet (name ``weights``) so it never races the sim's own tests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import synthetic_checkpoint
from weights_world import HubWorld

from ms4fleet import paths
from ms4fleet.catalog import model_profiles
from ms4fleet.weights.cli import main as weights_main

pytestmark = pytest.mark.sim

PROFILE = model_profiles()["mistral-small-4-fp8"]
TOKEN_ENV = "MS4FLEET_SIM_HF_TOKEN"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from ms4fleet_sim import dockercli
    from ms4fleet_sim import fleet as simfleet
    from tests.support.simhosts import bring_up

    if not dockercli.daemon_ok():
        pytest.fail("the sim needs a running dockerd: run scripts/ensure-docker.sh first")
    sim = bring_up(tmp_path_factory.mktemp("weights-sim"), name="weights", specs=("h200x2",) * 3)
    try:
        yield sim
    finally:
        for host in sim.hosts.values():
            host.close()
        simfleet.down(sim.fleet)


def _inventory(sim: object, tmp_path: Path, revision: str) -> Path:
    """The fleet's pyinfra inventory (it carries the strict known_hosts file) plus a weights section."""
    from ms4fleet_sim.inventories import render_pyinfra

    text = render_pyinfra(sim.record)  # type: ignore[attr-defined]
    weights = {"source": "hub", "revision": revision, "hf_token": {"env": TOKEN_ENV}}
    path = tmp_path / "inventory.py"
    path.write_text(f"{text}\nsim[1]['ms4fleet_weights'] = {weights!r}\n")
    return path


def test_stage_to_three_sim_hosts_fetches_once_and_hosts_verify(
    fleet: object, hub_world: HubWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = hub_world.hub.add_repo(PROFILE.repo_id, gated=True)
    repo.granted_tokens.add(hub_world.token.reveal())
    files = synthetic_checkpoint(seed=11)
    revision = repo.add_commit(files)
    monkeypatch.setenv(TOKEN_ENV, hub_world.token.reveal())
    inventory = _inventory(fleet, tmp_path, revision)
    argv = ["weights", "stage", str(inventory), "--endpoint", hub_world.hub.url, "--staging-dir", str(tmp_path / "s")]

    assert weights_main(argv) == 0
    wanted = {
        "params.json",
        "consolidated-00001-of-00002.safetensors",
        "consolidated-00002-of-00002.safetensors",
        "tekken.json",
    }
    downloads = [h.path for h in hub_world.hub.gets()]
    assert len(downloads) == len(wanted) == len(set(downloads)), downloads

    dest = paths.model_dir("/srv/ms4fleet/models", PROFILE, revision)
    hosts = list(fleet.hosts.values())  # type: ignore[attr-defined]
    for host in hosts:
        # Checked with the host's own tools, not with ms4fleet's verifier.
        listing = host.sudo(f"cd {dest} && sha256sum {' '.join(sorted(wanted))}").stdout
        sums = {line.split()[1]: line.split()[0] for line in listing.splitlines()}
        assert sums == {name: hashlib.sha256(files[name]).hexdigest() for name in wanted}
        modes = host.sudo(f"stat -c '%U %a %n' {dest} {dest}/params.json").stdout.split("\n")
        # Root-owned and read-only: the service user reads the weights and can change none of them.
        owner = paths.WEIGHTS_OWNER.split(":")[0]
        assert modes[0].startswith(f"{owner} 555") and modes[1].startswith(f"{owner} 444")
        manifest = json.loads(host.sudo(f"cat {dest}/.ms4fleet/manifest.json").stdout)
        assert manifest["revision"] == revision and {f["path"] for f in manifest["files"]} == wanted
        assert host.run(f"test -e {dest}.partial", check=False).rc != 0

    # Again: every host already verifies, nothing moves.
    hub_world.hub.clear()
    assert weights_main(argv) == 0
    assert hub_world.hub.gets() == []

    # A corrupted file on one host: only that host is repaired, from the controller's verified copy.
    shard = "consolidated-00001-of-00002.safetensors"
    hosts[1].sudo(f"chmod u+w {dest} {dest}/{shard} && printf 'XXXX' | dd of={dest}/{shard} conv=notrunc status=none")
    assert weights_main(argv) == 0
    assert hub_world.hub.gets() == []
    fixed = hosts[1].sudo(f"sha256sum {dest}/{shard}").stdout.split()[0]
    assert fixed == hashlib.sha256(files[shard]).hexdigest()
