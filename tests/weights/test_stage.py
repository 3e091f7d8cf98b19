"""Fleet staging with real rsync and the real stdlib verifier; hosts here are local directories
(``HostTarget.local``), so everything but the ssh hop runs as on a fleet. The ssh hop is covered by the
``sim`` test against the simulated fleet."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from weights_world import INCLUDE, PROFILE, REPO_ID, WANTED, HubWorld

from ms4fleet import childenv
from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights.fetch import fetch_weights
from ms4fleet.weights.hub import HubSource
from ms4fleet.weights.stage import HostTarget, StageJob, stage_to_hosts, target_for

SYSTEM_PYTHON = "/usr/bin/python3"  # no venv, no ms4fleet: the verifier must be stdlib only


@pytest.fixture
def staged(hub_world: HubWorld, tmp_path: Path) -> Path:
    staged = tmp_path / "controller" / REPO_ID.replace("/", "--") / hub_world.pinned
    source = HubSource(REPO_ID, hub_world.pinned, hub_world.token, endpoint=hub_world.hub.url)
    fetch_weights(source, staged, profile=PROFILE, include=INCLUDE)
    return staged


def _jobs(tmp_path: Path, revision: str, count: int = 3) -> list[StageJob]:
    return [
        StageJob(
            HostTarget(name=f"gpu-{i}", python=SYSTEM_PYTHON),
            str(tmp_path / f"gpu-{i}" / "srv/ms4fleet/models" / REPO_ID.replace("/", "--") / revision),
        )
        for i in range(count)
    ]


@pytest.mark.slow
def test_stage_fetches_once_and_every_host_verifies(hub_world: HubWorld, staged: Path, tmp_path: Path) -> None:
    jobs = _jobs(tmp_path, hub_world.pinned)
    outcomes = stage_to_hosts(staged, jobs, parallel=3)
    total = sum(len(hub_world.files[r]) for r in WANTED) + (staged / ".ms4fleet/manifest.json").stat().st_size
    assert [(o.host, o.status) for o in outcomes] == [(f"gpu-{i}", "staged") for i in range(3)]
    assert all(o.bytes_sent == total and o.hashed_on_host == len(WANTED) for o in outcomes)
    for job in jobs:
        assert hv.verify(job.dest, full=True, repo=REPO_ID, revision=hub_world.pinned)["ok"]
        assert {p.name for p in Path(job.dest).iterdir()} == WANTED | {".ms4fleet"}
        assert not Path(hv.staging_dir(job.dest)).exists()
    # One download per file from the source, whatever the number of hosts.
    per_file = [h.path for h in hub_world.hub.gets()]
    assert len(per_file) == len(WANTED) == len(set(per_file))

    again = stage_to_hosts(staged, jobs, parallel=3)
    assert [o.status for o in again] == ["present"] * 3 and all(o.bytes_sent == 0 for o in again)


@pytest.mark.slow
def test_stage_repairs_only_the_damaged_file_on_the_damaged_host(
    staged: Path, tmp_path: Path, hub_world: HubWorld
) -> None:
    jobs = _jobs(tmp_path, hub_world.pinned)
    stage_to_hosts(staged, jobs, parallel=3)
    broken = Path(jobs[1].dest)
    shard = "consolidated-00002-of-00002.safetensors"
    os.chmod(broken, 0o755)
    (broken / shard).chmod(0o644)
    with (broken / shard).open("r+b") as handle:
        handle.write(b"\0\0\0\0")

    outcomes = stage_to_hosts(staged, jobs, parallel=3)
    assert [o.status for o in outcomes] == ["present", "staged", "present"]
    assert outcomes[1].bytes_sent == len(hub_world.files[shard])
    assert outcomes[1].steps == ["prepare: repair"]
    # Only the re-sent file needed hashing on the host: the others kept their stamp.
    assert outcomes[1].hashed_on_host == 1
    assert hv.verify(str(broken), full=True)["ok"]


def test_interrupted_transfer_resumes_and_never_leaves_a_verifying_dest(
    staged: Path, tmp_path: Path, hub_world: HubWorld
) -> None:
    job = _jobs(tmp_path, hub_world.pinned, count=1)[0]
    # A transfer that died mid-file: the host holds the staging dir with a truncated shard.
    prepared = hv.prepare(job.dest)
    assert prepared["action"] == "fresh"
    shard = "consolidated-00001-of-00002.safetensors"
    partial = Path(hv.staging_dir(job.dest))
    (partial / shard).write_bytes(hub_world.files[shard][:1_000_000])
    assert not hv.verify(job.dest)["ok"]

    (outcome,) = stage_to_hosts(staged, [job])
    assert outcome.status == "staged", outcome.detail
    total = sum(len(hub_world.files[r]) for r in WANTED) + (staged / ".ms4fleet/manifest.json").stat().st_size
    # rsync's append mode sent only the missing tail of the shard.
    assert outcome.bytes_sent == total - 1_000_000
    assert hv.verify(job.dest, full=True)["ok"]
    assert (Path(job.dest) / shard).read_bytes() == hub_world.files[shard]


def test_unreachable_host_is_reported_not_raised(staged: Path, tmp_path: Path, hub_world: HubWorld) -> None:
    bad = StageJob(
        HostTarget(name="ghost", hostname="127.0.0.1", port=1, ssh_options=("-o", "ConnectTimeout=2")),
        "/srv/ms4fleet/models/x",
    )
    good = _jobs(tmp_path, hub_world.pinned, count=1)[0]
    outcomes = stage_to_hosts(staged, [bad, good])
    assert outcomes[0].status == "failed" and "prepare failed" in outcomes[0].detail
    assert outcomes[1].status == "staged"


def test_ssh_and_rsync_command_lines() -> None:
    target = HostTarget("gpu-1", hostname="10.0.0.5", port=2222, user="deploy", key="/k/id", ssh_options=("-o", "X=y"))
    argv = target.command(["python3", "-", "verify", "/srv/m dir"])
    assert argv[:1] == ["ssh"] and argv[-3:] == ["10.0.0.5", "--", "sudo -n python3 - verify '/srv/m dir'"]
    assert argv[argv.index("-p") : argv.index("-p") + 2] == ["-p", "2222"] and "-l" in argv
    rsync = target.rsync_argv(Path("/stage/x"), "/srv/m dir.partial")
    assert rsync[-2:] == ["/stage/x/", "10.0.0.5:'/srv/m dir.partial'/"]
    assert "--rsync-path=sudo -n rsync" in rsync and "--append-verify" in rsync
    root = HostTarget("gpu-2", hostname="h", user="root")
    assert not root.needs_sudo and "sudo" not in root.command(["true"])[-1]


def test_targets_from_pyinfra_and_ansible_host_data() -> None:
    pyinfra = target_for(
        "gpu-1",
        {"hostname": "10.0.0.5", "port": 2201, "user": "ms4fleet", "key": "/k"},
        {"ssh_known_hosts_file": "/kh", "ssh_strict_host_key_checking": "yes"},
    )
    assert (pyinfra.hostname, pyinfra.port, pyinfra.user, pyinfra.key) == ("10.0.0.5", 2201, "ms4fleet", "/k")
    assert pyinfra.ssh_options == ("-o", "UserKnownHostsFile=/kh")
    # The core's host-key checking comes first, where ssh takes it over any later option.
    assert pyinfra.ssh_argv()[:3] == ["ssh", "-o", "StrictHostKeyChecking=yes"]
    ansible = target_for("gpu-2", {"hostname": "h"}, {"ansible_ssh_common_args": "-o UserKnownHostsFile=/kh"})
    assert ansible.ssh_options == ("-o", "UserKnownHostsFile=/kh") and ansible.port == 22
    assert target_for("@local", {}, {}).hostname is None
    assert target_for("x", {}, {"ansible_connection": "local"}).command(["true"]) == ["true"]


def _fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, purpose: str, run: str) -> Path:
    """An ``ssh`` first on PATH that stands in for ssh to a host (``purpose``): it skips ssh's options and the
    host name, then runs ``run`` (Python, with ``command``: the remote command). Returns its directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(
        "#!/usr/bin/python3\n"
        f"# Stands in for ssh to a host: {purpose}.\n"
        "import json, os, sys\n"
        "args, i = sys.argv[1:], 0\n"
        "while i < len(args) and args[i].startswith('-') and args[i] != '--':\n"
        "    i += 2 if args[i] in ('-o', '-p', '-i', '-l') else 1\n"
        "i += 1  # the host name\n"
        "if i < len(args) and args[i] == '--':\n"
        "    i += 1\n"
        "command = ' '.join(args[i:])\n" + run
    )
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_missing_rsync_on_the_host_is_named(
    staged: Path, tmp_path: Path, hub_world: HubWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_ssh(
        tmp_path,
        monkeypatch,
        "runs the remote command here, with a PATH that has no rsync in it",
        "env = dict(os.environ, PATH='/nonexistent') if command.startswith('rsync') else dict(os.environ)\n"
        "os.execve('/bin/sh', ['sh', '-c', command], env)\n",
    )
    dest = _jobs(tmp_path, hub_world.pinned, count=1)[0].dest
    job = StageJob(HostTarget(name="bare", hostname="bare.example", user="root", python=SYSTEM_PYTHON), dest)
    (outcome,) = stage_to_hosts(staged, [job])
    assert outcome.status == "failed" and outcome.steps == ["prepare: fresh"]
    assert outcome.detail == "rsync is not installed on the host: install it (provisioning does), then re-run"


def test_a_controller_without_rsync_fails_every_host_with_one_line(
    staged: Path, tmp_path: Path, hub_world: HubWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A direct caller (not through an engine's preflight) gets the core's line, not ``[Errno 2] ... 'rsync'``."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs"))
    jobs = _jobs(tmp_path, hub_world.pinned, count=2)
    line = "controller: rsync not found on PATH (needed for weights staging): install it with `apt-get install rsync`"
    assert [(o.host, o.status, o.detail) for o in stage_to_hosts(staged, jobs)] == [
        ("gpu-0", "failed", line),
        ("gpu-1", "failed", line),
    ]
    assert not any(Path(job.dest).parent.exists() for job in jobs)


def test_no_secret_of_the_controller_reaches_ssh_or_rsync(
    staged: Path, tmp_path: Path, hub_world: HubWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _fake_ssh(
        tmp_path,
        monkeypatch,
        "records the environment it was given, then runs the remote command here",
        "with open(os.environ.get('RECORD_TO', '/nonexistent/record'), 'a') as out:\n"
        "    out.write(json.dumps(dict(os.environ)) + '\\n')\n"
        "os.execv('/bin/sh', ['sh', '-c', command])\n",
    )
    record = tmp_path / "ssh-environments.jsonl"
    monkeypatch.setenv("HF_TOKEN", "hf_" + "s3cret" * 6)
    monkeypatch.setenv("MS4FLEET_API_KEY", "sk-" + "k3y" * 8)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    dest = _jobs(tmp_path, hub_world.pinned, count=1)[0].dest
    job = StageJob(HostTarget(name="gpu-1", hostname="gpu-1.example", user="root", python=SYSTEM_PYTHON), dest)
    # The recording ssh learns where to write from its environment: the one thing added for this test.
    monkeypatch.setattr("ms4fleet.childenv.KEPT", childenv.KEPT | {"RECORD_TO"})
    monkeypatch.setenv("RECORD_TO", str(record))
    (outcome,) = stage_to_hosts(staged, [job])
    assert outcome.status == "staged", outcome.detail
    environments = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(environments) >= 4  # the version probe (ssh -V), prepare, rsync's own ssh, finalize
    for env in environments:
        assert "HF_TOKEN" not in env and "MS4FLEET_API_KEY" not in env
        assert not any("s3cret" in value or "k3y" in value for value in env.values())
        assert env["SSH_AUTH_SOCK"] == str(tmp_path / "agent.sock") and bin_dir.as_posix() in env["PATH"]


def test_the_child_environment_keeps_only_what_ssh_and_rsync_read() -> None:
    given = {"PATH": "/bin", "HOME": "/root", "LC_ALL": "C.UTF-8", "HF_TOKEN": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    assert childenv.child_env(given) == {"PATH": "/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}
