"""End to end on a 3-host simulated fleet: ``pyinfra -y inventory deploy.py`` from bare hosts to verified
endpoints (weights from the fleet's mirror, the image pulled through its registry), asserted ON the hosts;
a second run changes nothing; a host whose GPU is taken by a co-tenant fails its headroom gate while the
other hosts complete; an inventory pinning another apt key stops every host at the keyring."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ms4fleet.converged import image_id, image_query
from ms4fleet.hostside.weights_verify import META_DIR
from ms4fleet.provision import KEYRING, SOURCES_FILE
from ms4fleet_sim import aptrepo, signing
from tests.pyinfra import simfleet

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "pyinfra-e2e"
WEIGHTS = "/srv/ms4fleet/models/mistralai--Mistral-Small-4-119B-2603/5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"
UNITS = [f"ms4fleet-vllm-{i}.service" for i in range(4)]
OTHER_KEY = "534787966B0A38639430D690B7F603BCB55F43C9"  # tests/data/apt-keys/ed25519.asc


class Deployed:
    def __init__(self, fleet: simfleet.Fleet) -> None:
        self.fleet = fleet
        self.first = self.run()

    def run(self, *args: str) -> simfleet.Run:
        return simfleet.pyinfra(self.fleet, *args)


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    simfleet.simfleet.down(simfleet.simfleet.Fleet(root=simfleet.ROOT, name=FLEET))
    fleet = simfleet.ensure_fleet(FLEET, 3)
    try:
        yield Deployed(fleet)
    finally:
        fleet.down()


def test_first_run_converges_every_host_to_verified_endpoints(deployed: Deployed) -> None:
    assert deployed.first.rc == 0, deployed.first.output[-3000:]
    fleet = deployed.fleet
    for name in fleet.hosts:
        simfleet.assert_serving(fleet, name, replicas=len(UNITS))
        assert fleet.sh(name, "cat /etc/modprobe.d/ms4fleet-blacklist-nouveau.conf").count("blacklist nouveau") == 1
        manifest = json.loads(fleet.sh(name, f"cat {WEIGHTS}/{META_DIR}/manifest.json"))
        assert {f["path"] for f in manifest["files"]} >= {"params.json", "tekken.json"}
        verified = json.loads(fleet.sh(name, "cat /var/lib/ms4fleet/verified.json"))
        assert [r["ok"] for r in verified["replicas"]] == [True] * 4
        assert {"completion", "tools", "streaming"} <= set(verified["checks"])
        # Pulled through the fleet's registry, a Docker Hub mirror to the host: the production `docker pull`.
        assert json.loads(fleet.sh(name, "cat /etc/docker/daemon.json"))["registry-mirrors"] == [
            "http://ms4fleet-sim-registry:5000"
        ]
        assert fleet.sh(name, "docker image inspect -f '{{index .RepoDigests 0}}' vllm/vllm-openai:v0.32.0").startswith(
            "vllm/vllm-openai@sha256:"
        )


def test_second_run_changes_nothing(deployed: Deployed) -> None:
    again = deployed.run()
    assert again.rc == 0, again.output[-3000:]
    assert again.changed_ops() == 0, again.output[-20000:]
    assert "converged (nothing to do)" in again.output


def test_the_image_query_reads_dockers_api_and_falls_back_to_the_cli(deployed: Deployed) -> None:
    # The converged check's image part on a deployed host: Docker's Engine API through the socket (curl), and
    # the docker CLI where curl cannot answer (a shell function named curl that fails stands in for a host
    # without curl); both print the same image id, and a missing image prints no id.
    fleet, name = deployed.fleet, deployed.fleet.hosts[0]
    image = "vllm/vllm-openai:v0.32.0"
    cli = fleet.sh(name, f"docker image inspect --format '{{{{.Id}}}}' {image}").strip()
    assert cli.startswith("sha256:")
    assert image_id(fleet.sh(name, image_query(image)).splitlines()) == cli
    no_curl = fleet.sh(name, f"curl() {{ return 7; }}; {image_query(image)}")
    assert image_id(no_curl.splitlines()) == cli
    gone = fleet.sh(name, f"{image_query('vllm/vllm-openai:v0.0.1')} 2>/dev/null; true")
    assert image_id(gone.splitlines()) == ""


def test_later_runs_take_the_quick_check_which_still_sees_a_quiet_edit(deployed: Deployed) -> None:
    # The second run's full check passed and was remembered: this one proves the same from fingerprints, each
    # host's quick check answered by the read deploy.py sent before it loaded the deploy (earlyread).
    quick = deployed.run("--debug")
    assert quick.rc == 0 and quick.changed_ops() == 0, quick.output[-3000:]
    assert quick.output.count("nothing the last full check read has changed") == 3, quick.output[-3000:]
    assert quick.output.count("check answered by the read sent before the deploy loaded") == 3, quick.output[-3000:]
    # An edit that keeps the size and puts the mtime back (touch -r) still moves the ctime: repaired.
    fleet, name = deployed.fleet, deployed.fleet.hosts[2]
    conf = "/etc/modprobe.d/ms4fleet-blacklist-nouveau.conf"
    before = fleet.sh(name, f"cat {conf}")
    fleet.sh(
        name,
        f"cp -p {conf} /tmp/ref && sed -i 's/blacklist nouveau/blacklist nouveaX/' {conf} && touch -r /tmp/ref {conf}",
    )
    assert fleet.sh(name, f"stat -c %s {conf}") == fleet.sh(name, "stat -c %s /tmp/ref")
    repaired = deployed.run("--debug")
    assert repaired.rc == 0, repaired.output[-3000:]
    assert repaired.changed_ops() > 0
    assert repaired.output.count("nothing the last full check read has changed") == 2, repaired.output[-3000:]
    # The edited host's quick check came early too; the full check after it was read the usual way.
    assert repaired.output.count("check answered by the read sent before the deploy loaded") == 3
    assert fleet.sh(name, f"cat {conf}") == before


def test_a_host_without_headroom_fails_alone(deployed: Deployed) -> None:
    fleet = deployed.fleet
    busy, other = fleet.hosts[1], fleet.hosts[0]
    # A co-tenant holding most of GPU 0 on one host, and one replica down on two hosts: both need a start.
    with simfleet.gpu0_taken(fleet, busy):
        for name in (busy, other):
            fleet.sh(name, "systemctl stop ms4fleet-vllm-0.service")
        result = deployed.run()
        assert result.rc != 0
        assert f"[{busy}] headroom: does-not-fit" in result.output, result.output[-3000:]
        assert fleet.sh(other, "systemctl is-active ms4fleet-vllm-0.service").strip() == "active"
        assert fleet.sh(busy, "systemctl is-active ms4fleet-vllm-0.service", check=False).strip() == "inactive"
    healed = deployed.run()
    assert healed.rc == 0, healed.output[-3000:]
    assert fleet.sh(busy, "systemctl is-active ms4fleet-vllm-0.service").strip() == "active"


def test_a_key_other_than_the_pinned_one_stops_the_host_with_one_line(deployed: Deployed, tmp_path: Path) -> None:
    """The inventory pins another key than the repository's: every host stops at the keyring with one line,
    its keyring and sources file untouched and its replicas serving; apt itself refuses a repository signed
    by a key other than the one its sources entry pins."""
    fleet = deployed.fleet
    pinned = signing.fingerprint()
    text = fleet.inventory.read_text()
    assert text.count(pinned) == 1
    inventory = tmp_path / "inventory.py"
    inventory.write_text(text.replace(pinned, OTHER_KEY))
    before = {name: fleet.sh(name, f"sha256sum {KEYRING} {SOURCES_FILE}") for name in fleet.hosts}
    refused = simfleet.pyinfra(replace(fleet, inventory=inventory))
    assert refused.rc != 0
    line = f"apt key: the key at {aptrepo.KEY_URL} has fingerprint {pinned}, not the pinned {OTHER_KEY}: not installed"
    for name in fleet.hosts:
        assert f"[{name}] {line}" in refused.output, refused.output[-3000:]
        assert fleet.sh(name, f"sha256sum {KEYRING} {SOURCES_FILE}") == before[name]
        simfleet.assert_serving(fleet, name, replicas=len(UNITS))
    # apt's own check: the same repository and keyring, the sources entry pinning another fingerprint.
    name = fleet.hosts[0]
    assert f"Signed-By: {KEYRING} {pinned}\n" in fleet.sh(name, f"cat {SOURCES_FILE}")
    parts = "/tmp/apt-pin-check"
    fleet.sh(name, f"mkdir -p {parts} && cp {SOURCES_FILE} {parts}/pinned.sources")
    apt = f"apt-get update -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts={parts} 2>&1"
    assert "Err:" not in fleet.sh(name, apt)
    fleet.sh(name, f"sed -i 's/{pinned}/{OTHER_KEY}/' {parts}/pinned.sources")
    failed = fleet.sh(name, apt + "; true")
    assert "Err:" in failed or "not signed" in failed or "NO_PUBKEY" in failed, failed
    fleet.sh(name, f"rm -rf {parts} && apt-get update >/dev/null 2>&1")
    healed = deployed.run()
    assert healed.rc == 0 and healed.changed_ops() == 0, healed.output[-3000:]
