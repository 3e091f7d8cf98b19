"""Secure by default, end to end on two simulated H200 hosts: an inventory that names no API key and does not
say the endpoint is open is deployed behind the key ms4fleet generates on the controller, one host by
pyinfra and one by Ansible. Each host holds that key (root 0600, the controller file's bytes: the same on
both), the replicas refuse a request without it and serve one with it, and each engine's verify gate passed
with it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest

from ms4fleet import apikey
from tests.ansible import simrun
from tests.pyinfra import simfleet
from tests.support import badinv

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "genkey"
CURL = "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v1/models"


@dataclasses.dataclass
class Deployed:
    fleet: simfleet.Fleet
    pyinfra: simfleet.Run
    ansible: simrun.Run


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    fleet = simfleet.ensure_fleet(FLEET, 2, gpus="h200x2")
    # The sim's inventories say open_endpoint: true; these say nothing about the key.
    silent = badinv.Case("no-key-said", lambda h, shared, e: shared.pop("ms4fleet_serving"), "")
    where = tmp_path_factory.mktemp("inventory")
    py_inventory = badinv.pyinfra_inventory(fleet.inventory.read_text(), silent, where)
    yml_inventory = badinv.ansible_inventory(fleet.inventory.with_suffix(".yml").read_text(), silent, where)
    first, second = fleet.hosts
    try:
        by_pyinfra = simfleet.pyinfra(dataclasses.replace(fleet, inventory=py_inventory), "--limit", first)
        by_ansible = simrun.playbook(yml_inventory, "site.yml", "--limit", second)
        yield Deployed(fleet, by_pyinfra, by_ansible)
    finally:
        fleet.down()


def test_the_generated_key_guards_the_replicas_of_both_engines(deployed: Deployed) -> None:
    assert deployed.pyinfra.rc == 0, deployed.pyinfra.output[-3000:]
    assert deployed.ansible.rc == 0, deployed.ansible.output[-3000:]
    fleet = deployed.fleet
    key_file = apikey.key_path()
    key = apikey.read_key(key_file)
    assert key not in deployed.pyinfra.output and key not in deployed.ansible.output
    env_files = set()
    for name in fleet.hosts:
        assert fleet.sh(name, "stat -c '%U %G %a' /etc/ms4fleet/secrets/api_key").split() == ["root", "root", "600"]
        assert fleet.sh(name, "cat /etc/ms4fleet/secrets/api_key").encode() == key_file.read_bytes(), name
        assert fleet.sh(name, "stat -c '%U %G %a' /etc/ms4fleet/vllm.env").split() == ["root", "root", "600"]
        env_files.add(fleet.sh(name, "sha256sum < /etc/ms4fleet/vllm.env"))
        assert fleet.sh(name, CURL) == "401", name
        keyed = CURL.replace("curl -s", 'curl -s -H "Authorization: Bearer $(cat /etc/ms4fleet/secrets/api_key)"')
        assert fleet.sh(name, keyed) == "200", name
        # Each engine's verify gate ran with the same key (the 401 above would have failed it otherwise).
        verified = json.loads(fleet.sh(name, "cat /var/lib/ms4fleet/verified.json"))
        assert verified["replicas"] and all(r["ok"] for r in verified["replicas"]), (name, verified)
    assert len(env_files) == 1, "both engines built the same environment file"
