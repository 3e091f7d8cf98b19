"""``ms4fleet weights stage`` against a simulated fleet: real SSH (key + strict known_hosts), a non-root
user with sudo, rsync and the stdlib verifier on Debian hosts. The Hub is the loopback test server; the
controller fetches once and every host checks its own copy.

This module brings up its own three-host fleet (name ``weights``) so it never races the sim's own tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
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
    from tests.support.simhosts import running

    with running(tmp_path_factory.mktemp("weights-sim"), name="weights", specs=("h200x2",) * 3) as sim:
        yield sim


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


def _stage_command(inventory: Path, hub_world: HubWorld, staging: Path) -> list[str]:
    # --token-file: the token never rides in an argv or an environment the terminal shows.
    return [
        sys.executable, "-c", "import sys; from ms4fleet.cli import main; sys.exit(main())",
        "weights", "stage", str(inventory), "--endpoint", hub_world.hub.url, "--staging-dir", str(staging),
        "--token-file", str(hub_world.token_ref.file), "--bwlimit", "1M",
    ]  # fmt: skip


def _overall(screen: str) -> str | None:
    """The overall row of the live display (label, bar, bytes of total, speed, ETA), as the terminal shows it."""
    return next((line for line in screen.splitlines() if "stage to 3 host(s)" in line), None)


def test_staging_progress_moves_in_a_terminal_and_prints_lines_without_one(
    fleet: object, hub_world: HubWorld, tmp_path: Path
) -> None:
    """A throttled copy of ~12 MiB per host: in tmux the overall row (with its ETA) and the host rows move
    while rsync copies; through a pipe, the same run prints plain periodic lines and one per finished host."""
    repo = hub_world.hub.add_repo(PROFILE.repo_id, gated=True)
    repo.granted_tokens.add(hub_world.token.reveal())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    revision = repo.add_commit(synthetic_checkpoint(seed=21, shard_bytes=8 * 1024 * 1024))
    argv = _stage_command(_inventory(fleet, tmp_path, revision), hub_world, tmp_path / "s")
    session = f"ms4fleet-progress-{os.getpid()}"
    done_file = tmp_path / "exit"
    script = f"{shlex.join(argv)}; echo $? > {shlex.quote(str(done_file))}; sleep 600"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "20", script], env=env, check=True)
    screens: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while not done_file.exists() and time.monotonic() < deadline:
            capture = ["tmux", "capture-pane", "-p", "-t", session]
            screens.append(subprocess.run(capture, capture_output=True, text=True, check=True).stdout)
            time.sleep(0.5)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    assert done_file.read_text().strip() == "0", screens[-1]
    rows = [row for row in map(_overall, screens) if row is not None]
    # Bar, "moved/total unit", "speed/s, ETA 12s": the figures must move during the copy.
    figures = {
        m.group(1) for m in (re.search(r" ([\d.]+/[\d.]+ [KMG]iB) [\d.]+ [KMG]?i?B/s, ETA \d", r) for r in rows) if m
    }
    assert len(figures) >= 3, sorted(set(rows))
    hosts = list(fleet.hosts)  # type: ignore[attr-defined]
    assert any(all(name in screen for name in hosts) for screen in screens), "a row per host while copying"

    revision = repo.add_commit(synthetic_checkpoint(seed=23, shard_bytes=12 * 1024 * 1024))
    argv = _stage_command(_inventory(fleet, tmp_path, revision), hub_world, tmp_path / "s")
    piped = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert piped.returncode == 0, piped.stderr
    lines = [line for line in piped.stderr.splitlines() if line.startswith("stage to 3 host(s): ")]
    periodic = [line for line in lines if "(finished: " not in line]
    finished = [line for line in lines if "(finished: " in line]
    assert len(finished) == 3 and {line.rsplit("(finished: ", 1)[1].rstrip(")") for line in finished} == set(hosts)
    assert periodic and all(re.search(r"\d+(\.\d)? MiB/s, ETA \S+; \d of 3 hosts done$", line) for line in periodic)
    assert "\r" not in piped.stderr and "\x1b" not in piped.stderr
