"""Secure by default, end to end on one simulated H200 host: an inventory that names no API key and does not
say the endpoint is open is deployed by pyinfra behind the key ms4fleet generates on the controller. The
host holds that key (root 0600, the controller file's bytes), the replicas refuse a request without it and
serve one with it, and the deploy's own verify gate passed with it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest

from ms4fleet import apikey
from tests.pyinfra import simfleet
from tests.support import badinv

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "genkey"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[simfleet.Fleet, simfleet.Run]]:
    fleet = simfleet.ensure_fleet(FLEET, 1, gpus="h200x2")
    # The sim's inventories say open_endpoint: true; this one says nothing about the key.
    silent = badinv.Case("no-key-said", lambda h, shared, e: shared.pop("ms4fleet_serving"), "")
    where = tmp_path_factory.mktemp("inventory")
    inventory = badinv.pyinfra_inventory(fleet.inventory.read_text(), silent, where)
    keyed = dataclasses.replace(fleet, inventory=inventory)
    try:
        yield keyed, simfleet.pyinfra(keyed)
    finally:
        fleet.down()


def test_the_generated_key_guards_the_deployed_replicas(deployed: tuple[simfleet.Fleet, simfleet.Run]) -> None:
    fleet, run = deployed
    assert run.rc == 0, run.output[-3000:]
    (name,) = fleet.hosts
    key_file = apikey.key_path()
    key = apikey.read_key(key_file)
    assert key not in run.output
    assert fleet.sh(name, "stat -c '%U %G %a' /etc/ms4fleet/secrets/api_key").split() == ["root", "root", "600"]
    assert fleet.sh(name, "cat /etc/ms4fleet/secrets/api_key").encode() == key_file.read_bytes()
    assert fleet.sh(name, "stat -c '%U %G %a' /etc/ms4fleet/vllm.env").split() == ["root", "root", "600"]
    refused = fleet.sh(name, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v1/models")
    assert refused == "401"
    served = fleet.sh(
        name,
        "curl -s -o /dev/null -w '%{http_code}' -H \"Authorization: Bearer $(cat /etc/ms4fleet/secrets/api_key)\" "
        "http://127.0.0.1:8000/v1/models",
    )
    assert served == "200"
    # The deploy's verify gate ran with the same key (it would have failed on the 401 otherwise).
    verified = json.loads(fleet.sh(name, "cat /var/lib/ms4fleet/verified.json"))
    assert verified["replicas"] and all(r["ok"] for r in verified["replicas"])
    assert "open_endpoint" not in fleet.inventory.read_text()
