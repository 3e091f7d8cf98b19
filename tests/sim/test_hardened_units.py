"""The sandboxed replica units on a sim host (systemd as PID 1): the exposure ``systemd-analyze security``
gives them there, a native replica (the vLLM stand-in, production flags) still serving under its unit, and
the weights it serves sealed against the service user and checked before every start: a change by the
service user is refused by the kernel, one by root behind the toolkit's back stops the next start.

One host of its own (fleet ``hardening``): the 580 driver installed and loaded, the stand-in installed as
the native venv's ``vllm``, the verifier and the weights finalized the way staging does, the units from
the host's plan."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ms4fleet.config import HostConfig
from ms4fleet.hostplan import HostPlan, host_plan
from ms4fleet.weights.startcheck import verifier_file
from ms4fleet_sim import weights_mirror
from tests.rollout.world import VENV, install_native_standin
from tests.support.simhosts import SimHost, provision_driver, put_files, running

pytestmark = [pytest.mark.sim, pytest.mark.slow]

DOCKER_MAX, NATIVE_MAX = 4.0, 2.5
REVISION = weights_mirror.SIM_REVISION
DOCKER_PROBE = "ms4fleet-docker-probe.service"


@dataclass
class Hardened:
    host: SimHost
    native: HostPlan
    docker: HostPlan

    @property
    def weights_dir(self) -> str:
        return self.native.serving.model_dir


def _config(runtime: str) -> HostConfig:
    data = {
        "ms4fleet_gpu": {"kind": "h200-sxm", "count": 2},
        "ms4fleet_runtime": {"kind": runtime, "venv": VENV},
        # Open: the units are installed without the secrets' environment file, the checks carry no key.
        "ms4fleet_serving": {"tensor_parallel_size": 1, "max_model_len": 32768, "open_endpoint": True},
        "ms4fleet_weights": {
            "source": "mirror",
            "mirror_url": "https://mirror.invalid",
            "revision": REVISION,
            "manifest_sha256": "ab" * 32,
        },
    }
    return HostConfig.from_host_data("hardening-1", data)


@pytest.fixture(scope="module")
def hardened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hardened]:
    root = tmp_path_factory.mktemp("hardening")
    with running(root / "project", name="hardening", specs=("h200x2",)) as sim:
        host = sim[sim.fleet.host_name(1)]
        provision_driver(host)
        install_native_standin(host)
        native, docker = host_plan(_config("native")), host_plan(_config("docker"))
        weights = native.require_weights().request
        # The sim's SSH user has the service user's default name: create it only where it is missing.
        user = native.service_user
        host.sudo(
            f"id -u {user.name} >/dev/null 2>&1 || useradd --system --no-create-home --shell {user.shell} {user.name}"
        )
        # The weights as staging leaves them: the files in DIR.partial, then the host's finalize.
        tree = weights_mirror.build_tree(root / "mirror", revision=REVISION)
        staged = {
            f"{weights.dest}.partial/{p.relative_to(tree)}": (p.read_bytes(), 0o644)
            for p in sorted(tree.rglob("*"))
            if p.is_file()
        }
        verifier, source, mode = verifier_file()
        put_files(host, {**staged, verifier: (source, mode)})
        parents = weights.dest.split("/")[1:-1]
        host.sudo("chmod 755 " + " ".join("/" + "/".join(parents[: i + 1]) for i in range(len(parents))))
        owner = f" --owner {shlex.quote(weights.owner)}" if weights.owner else ""
        host.sudo(f"python3 {verifier} finalize {weights.dest} --repo {weights.repo_id} --revision {REVISION}{owner}")
        units = {f.path: (f.content.encode(), f.mode) for f in native.files if f.kind == "unit"}
        probe = next(f for f in docker.files if f.kind == "unit")
        units[f"/etc/systemd/system/{DOCKER_PROBE}"] = (probe.content.encode(), probe.mode)
        put_files(host, units)
        host.sudo("systemctl daemon-reload")
        yield Hardened(host, native, docker)


def _exposure(host: SimHost, unit: str) -> float:
    out = host.sudo(f"systemd-analyze security {unit}").stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", out)
    assert match is not None, out
    print(f"{host.name}: systemd-analyze security {unit}: {match[1]} {match[2]}")
    return float(match[1])


def test_units_score_within_the_ceilings_on_the_host(hardened: Hardened) -> None:
    native_unit = hardened.native.replicas[0].unit_name
    assert _exposure(hardened.host, native_unit) <= NATIVE_MAX
    assert _exposure(hardened.host, DOCKER_PROBE) <= DOCKER_MAX


def test_native_replica_serves_under_its_sandbox(hardened: Hardened) -> None:
    host, replicas = hardened.host, hardened.native.replicas
    names = " ".join(r.unit_name for r in replicas)
    host.sudo(f"systemctl start {names}", timeout=300)
    assert host.sudo(f"systemctl is-active {names}").stdout.split() == ["active"] * len(replicas)
    for replica in replicas:
        body = host.run(f"curl -sf http://127.0.0.1:{replica.internal_port}/v1/models").stdout
        assert '"id":"mistral-small-4"' in body.replace(" ", ""), body
        # The sandbox is in force on the running process, not only written in the file.
        pid = host.sudo(f"systemctl show -p MainPID --value {replica.unit_name}").stdout.strip()
        lines = host.sudo(f"grep -E '^(NoNewPrivs|CapBnd|Seccomp):' /proc/{pid}/status").stdout.splitlines()
        status = dict(line.split(":\t", 1) for line in lines)
        assert status == {"NoNewPrivs": "1", "CapBnd": "0000000000000000", "Seccomp": "2"}, status
        allowed = host.sudo(f"systemctl show -p DeviceAllow --value {replica.unit_name}").stdout
        assert "/dev/nvidiactl rw" in allowed and "char-nvidia-uvm rw" in allowed, allowed


def test_service_user_cannot_alter_the_weights_or_read_their_metadata(hardened: Hardened) -> None:
    host, user, wdir = hardened.host, hardened.native.service_user.name, hardened.weights_dir
    shard = host.sudo(f"ls {wdir} | grep safetensors | head -1").stdout.strip()
    owners = host.sudo(f"stat -c '%U:%G %a %n' {wdir} {wdir}/{shard} {wdir}/.ms4fleet {wdir}/.ms4fleet/*").stdout
    assert [line.split()[:2] for line in owners.splitlines()] == [
        ["root:root", "555"],
        ["root:root", "444"],
        ["root:root", "700"],
        ["root:root", "600"],
        ["root:root", "600"],
    ], owners
    for attempt in (
        f"printf x >> {wdir}/{shard}",
        f"chmod u+w {wdir}/{shard}",
        f"mv {wdir}/{shard} {wdir}/moved",
        f"touch {wdir}/planted",
        f"cat {wdir}/.ms4fleet/manifest.json",
    ):
        done = host.sudo(f"runuser -u {user} -- sh -c {shlex.quote(attempt)}", check=False)
        said = done.stdout + done.stderr
        assert done.rc != 0 and ("Permission denied" in said or "Operation not permitted" in said), (attempt, done)


def test_a_change_by_root_behind_the_toolkit_is_caught_before_start(hardened: Hardened) -> None:
    host, replica, wdir = hardened.host, hardened.native.replicas[0], hardened.weights_dir
    shard = host.sudo(f"ls {wdir} | grep safetensors | head -1").stdout.strip()
    path = shlex.quote(f"{wdir}/{shard}")
    original = host.sudo(f"sha256sum {path}").stdout.split()[0]
    # Same size, one byte flipped, mode put back: only the stamp's ctime and the hash can tell.
    host.sudo(
        f"cp {path} /root/shard.orig && chmod u+w {path} && printf Z | dd of={path} bs=1 seek=4096 conv=notrunc "
        f"status=none && chmod 444 {path}"
    )
    try:
        restart = host.sudo(f"systemctl restart {replica.unit_name}", check=False, timeout=120)
        assert restart.rc != 0
        assert host.sudo(f"systemctl is-active {replica.unit_name}", check=False).stdout.strip() != "active"
        journal = host.sudo(f"journalctl -u {replica.unit_name} --no-pager -n 30").stdout
        assert f"{shard}: sha256 mismatch" in journal, journal
    finally:
        host.sudo(f"chmod u+w {path} && cat /root/shard.orig > {path} && chmod 444 {path} && rm /root/shard.orig")
    assert host.sudo(f"sha256sum {path}").stdout.split()[0] == original
    host.sudo(f"systemctl reset-failed {replica.unit_name}; systemctl start {replica.unit_name}", timeout=300)
    assert host.run(f"curl -sf http://127.0.0.1:{replica.internal_port}/health", check=False).rc == 0


def test_a_replica_that_dies_while_loading_fails_its_start_at_once(hardened: Hardened) -> None:
    """The start waits for /health only while the main process lives: a vLLM that exits during its load
    fails the start then, not after TimeoutStartSec (the sudo below would time out long before it)."""
    host, replica = hardened.host, hardened.native.replicas[0]
    timeout = next(line for line in replica.unit_text.splitlines() if line.startswith("TimeoutStartSec="))
    assert int(timeout.partition("=")[2]) > 120, timeout
    host.sudo("""printf %s '{"refuse_start": "simulated load failure"}' > /etc/nvidia-sim/faults.json""")
    try:
        restart = host.sudo(f"systemctl restart {replica.unit_name}", check=False, timeout=120)
        assert restart.rc != 0, restart
        result = host.sudo(f"systemctl show -p Result --value {replica.unit_name}").stdout.strip()
        assert result == "exit-code", result
        journal = host.sudo(f"journalctl -u {replica.unit_name} --no-pager -n 40").stdout
        assert "simulated load failure" in journal, journal
        assert f"exited before http://127.0.0.1:{replica.internal_port}/health answered" in journal, journal
    finally:
        host.sudo("rm -f /etc/nvidia-sim/faults.json")
    host.sudo(f"systemctl reset-failed {replica.unit_name}; systemctl restart {replica.unit_name}", timeout=300)
    assert host.sudo(f"systemctl is-active {replica.unit_name}").stdout.strip() == "active"
    assert host.run(f"curl -sf http://127.0.0.1:{replica.internal_port}/health", check=False).rc == 0
