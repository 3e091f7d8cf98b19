"""A rollback restores the image digest the previous release ran, though its tag has moved since (#17).

One Docker host of its own fleet (the shared rollout world runs native replicas): image v1 is pushed to the
fleet's registry under a tag and rolled out; then v2, an image that dies on its first completion, is pushed
under the same tag and the same inventory rolled out again. The release pins v2's digest, the canary fails
verification and is rolled back: the container runs v1's digest again, not what the tag names now. Then the
Ansible rollout (playbooks/rollout.yml) of the same settings: it pins, fails and rolls back alike.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.imagepin import resolve
from ms4fleet.rollout.release import RELEASE_FILE, STAGED_DIR
from ms4fleet_sim import dockercli, services, standin_image, weights_mirror
from ms4fleet_sim.inventories import py_literal
from tests.rollout.test_sim_rollout import cli
from tests.support.simhosts import SimFleet, SimHost, install_docker, provision_driver, running

pytestmark = [pytest.mark.sim, pytest.mark.slow]

REPOSITORY = "vllm/vllm-openai"
# A tag of the test's own: the registry's production tag stays as the sim pushed it.
TAG = "v0.32.0-pin"
CRASH_FILE = "/etc/ms4fleet-test/crash.json"


@dataclass
class DockerWorld:
    sim: SimFleet
    host: SimHost
    mirror: weights_mirror.MirrorServer
    root: Path

    def settings(self) -> dict[str, Any]:
        return {
            # The controller asks the fleet's registry (plain http on loopback, allowed here) for the tag.
            "ms4fleet_runtime": {
                "kind": "docker",
                "image": f"{REPOSITORY}:{TAG}",
                "registry_url": f"http://{self.sim.record.registry}",
                "registry_allow_insecure": True,
            },
            # Open: a rollout alone (no deploy first) writes no key file for the units to read.
            "ms4fleet_serving": {
                "bind_address": "0.0.0.0",
                "tensor_parallel_size": 1,
                "max_model_len": 32768,
                "open_endpoint": True,
            },
            "ms4fleet_weights": {
                "source": "mirror",
                "mirror_url": self.mirror.url,
                "allow_insecure": True,
                "revision": weights_mirror.SIM_REVISION,
            },
        }

    def inventory(self) -> Path:
        record = self.sim.record
        connection = {
            "ssh_hostname": "127.0.0.1",
            "ssh_port": self.host.endpoint.port,
            "ssh_user": record.user,
            "ssh_key": record.key_file,
            "ssh_known_hosts_file": record.known_hosts,
            "ssh_strict_host_key_checking": "yes",
            "ms4fleet_gpu": {"kind": self.host.gpu_kind, "count": self.host.gpu_count},
        }
        shared = {**self.settings(), "weights_staging_dir": str(self.root / "staging")}
        path = self.root / "inventory.py"
        path.write_text(f"gpus = {py_literal(([(self.host.name, connection)], shared))}\n", encoding="utf-8")
        return path

    def ansible_inventory(self) -> Path:
        record = self.sim.record
        host = {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.host.endpoint.port,
            "ms4fleet_gpu": {"kind": self.host.gpu_kind, "count": self.host.gpu_count},
        }
        group_vars = {
            "ansible_user": record.user,
            "ansible_ssh_private_key_file": record.key_file,
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={record.known_hosts} -o StrictHostKeyChecking=yes",
            "ansible_python_interpreter": "/usr/bin/python3",
            **self.settings(),
            "model_weights_staging_dir": str(self.root / "staging-ansible"),
        }
        doc = {"all": {"children": {"ms4fleet_gpu": {"hosts": {self.host.name: host}, "vars": group_vars}}}}
        path = self.root / "inventory.yml"
        path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        return path

    def push(self, image: str) -> str:
        """``image`` pushed to the fleet's registry under TAG; returns the manifest digest the push recorded."""
        target = f"{self.sim.record.registry}/{REPOSITORY}:{TAG}"
        dockercli.run(["tag", image, target])
        try:
            dockercli.run(["push", target], timeout=600)
            digests = json.loads(dockercli.out(["image", "inspect", "--format", "{{json .RepoDigests}}", target]))
        finally:
            dockercli.run(["rmi", target], check=False)
        prefix = f"{self.sim.record.registry}/{REPOSITORY}@"
        return next(d.removeprefix(prefix) for d in digests if d.startswith(prefix))


def _crashing_image(base: str) -> str:
    """``base`` whose engine dies on its first completion (a fault file and the variable naming it)."""
    tag = f"ms4fleet-test/standin-crash:{base.rsplit(':', 1)[-1]}"
    container = dockercli.out(["create", "--label", f"{dockercli.LABEL}=build", base]).strip()
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            blob = json.dumps({"crash_on_first_decode": True}).encode()
            info = tarfile.TarInfo(CRASH_FILE.lstrip("/"))
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
        dockercli.run(["cp", "-", f"{container}:/"], input_bytes=buffer.getvalue())
        dockercli.run(["commit", "--change", f"ENV MS4FLEET_SIM_FAULTS_FILE={CRASH_FILE}", container, tag])
    finally:
        dockercli.run(["rm", "-f", container], check=False)
    return tag


@pytest.fixture(scope="module")
def docker_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerWorld]:
    root = tmp_path_factory.mktemp("digest-world")
    with running(root / "project", name="digest", specs=("h200x2",)) as sim:
        host = next(iter(sim.hosts.values()))
        provision_driver(host)
        install_docker(host)
        # Docker Hub pulls go to the fleet's registry, as the sim's inventories configure it.
        host.sudo(
            'python3 -c \'import json,sys; p="/etc/docker/daemon.json"; d=json.load(open(p)); '
            f'd["registry-mirrors"]=["{services.REGISTRY_MIRROR_URL}"]; json.dump(d, open(p, "w"))\' '
            "&& systemctl restart docker"
        )
        weights_mirror.build_tree(root / "mirror")
        mirror = weights_mirror.serve(root / "mirror")
        try:
            yield DockerWorld(sim, host, mirror, root)
        finally:
            mirror.close()


def _running_image(host: SimHost, container: str) -> tuple[str, list[str]]:
    """The image id the replica's container runs and that image's RepoDigests."""
    image_id = host.sudo(f"docker inspect --format '{{{{.Image}}}}' {container}").stdout.strip()
    digests = host.sudo(f"docker image inspect --format '{{{{json .RepoDigests}}}}' {image_id}").stdout
    return image_id, json.loads(digests)


def test_a_rollback_runs_the_previous_digest_though_the_tag_moved(docker_world: DockerWorld, tmp_path: Path) -> None:
    from ms4fleet import paths

    standin = standin_image.ensure_image()
    first = docker_world.push(standin)
    inventory = docker_world.inventory()
    code = cli("rollout", str(inventory), "--report-dir", str(tmp_path / "one"))
    report = json.loads((tmp_path / "one" / "rollout.json").read_text())
    assert (code, report["outcome"]) == (0, "complete"), report["stopped"]
    host = docker_world.host
    record = json.loads(host.sudo(f"cat {RELEASE_FILE}").stdout)
    pinned = f"{REPOSITORY}@{first}"
    assert record["current"]["image"] == pinned
    container = paths.container_name(0)
    first_id, digests = _running_image(host, container)
    assert pinned in digests

    crashing = _crashing_image(standin)
    try:
        second = docker_world.push(crashing)
    finally:
        dockercli.run(["rmi", crashing], check=False)
    assert second != first
    code = cli("rollout", str(inventory), "--report-dir", str(tmp_path / "two"))
    report = json.loads((tmp_path / "two" / "rollout.json").read_text())
    (run,) = report["hosts"]
    assert code == 1 and run["phase"] == "rolled-back", report["stopped"]
    assert run["target"] != run["before"] == run["after"] == record["current"]["id"]
    # The release it tried names the new digest; the host runs the previous one again, and records it.
    staged = host.sudo(f"cat {STAGED_DIR}/{run['target']}/{paths.UNIT_PREFIX}-0.service").stdout
    assert f" {REPOSITORY}@{second} " in staged and f"{REPOSITORY}:{TAG}" not in staged
    assert json.loads(host.sudo(f"cat {RELEASE_FILE}").stdout) == record
    assert host.sudo(f"systemctl is-active {paths.UNIT_PREFIX}-0.service").stdout.strip() == "active"
    image_id, digests = _running_image(host, container)
    assert image_id == first_id and pinned in digests and f"{REPOSITORY}@{second}" not in digests
    # The tag itself names the crashing image now: the host pulled it by digest, never by the tag.
    assert host.sudo(f"docker image inspect {REPOSITORY}:{TAG}", check=False).rc != 0


def test_the_ansible_rollout_pins_and_rolls_back_alike(docker_world: DockerWorld) -> None:
    """After the test above: the tag still names the crashing image. playbooks/rollout.yml pins it too, the
    host fails verification, and rescue puts the recorded release back: the first digest runs again."""
    from ms4fleet import paths
    from tests.rollout.test_sim_rollout_ansible import playbook

    host = docker_world.host
    record = json.loads(host.sudo(f"cat {RELEASE_FILE}").stdout)
    container = paths.container_name(0)
    before_id, _ = _running_image(host, container)
    moved = resolve(f"{REPOSITORY}:{TAG}", f"http://{docker_world.sim.record.registry}", allow_insecure=True)
    assert moved != record["current"]["image"]
    host.sudo(f"rm -rf {STAGED_DIR}")
    run = playbook(docker_world.ansible_inventory())
    assert run.returncode != 0 and f"rolled back to {record['current']['id']}" in run.stdout, run.stdout[-3000:]
    # The release the playbook staged and started names the digest the tag has now, never the tag.
    staged = host.sudo(f"cat {STAGED_DIR}/*/{paths.UNIT_PREFIX}-0.service").stdout
    assert f" {moved} " in staged and f"{REPOSITORY}:{TAG}" not in staged
    assert json.loads(host.sudo(f"cat {RELEASE_FILE}").stdout) == record
    image_id, digests = _running_image(host, container)
    assert image_id == before_id and record["current"]["image"] in digests
    assert host.sudo(f"systemctl is-active {paths.UNIT_PREFIX}-0.service").stdout.strip() == "active"
