"""Privilege of the packaged deploy (``ms4fleet_pyinfra.deploy``) follows pyinfra's own settings: the host's
``_sudo``/``_sudo_user`` data, then ``--sudo``/``--sudo-user`` (pyinfra's Config); with neither, an SSH user
other than root uses sudo. Checked on what pyinfra will run: every planned operation's own arguments."""

from __future__ import annotations

from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state

from ms4fleet_pyinfra.deploys.fleet import deploy

WEIGHTS = {
    "source": "mirror",
    "mirror_url": "https://mirror.internal",
    "revision": "5e" * 20,
    "manifest_sha256": "ab" * 32,
}
UBUNTU = "ID=ubuntu\nVERSION_ID=24.04\n"


def planned_privilege(data: dict[str, Any], **config: Any) -> set[tuple[bool, str | None]]:
    """Prepare the deploy for one fake host as pyinfra's CLI does (``config``: what its flags set); return
    the distinct (``_sudo``, ``_sudo_user``) of the operations planned."""
    host_data = {
        "fake_delay": 0,
        "fake_delay_jitter": 0,
        "fake_responses": {"cat /etc/os-release": UBUNTU},
        "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
        "ms4fleet_weights": WEIGHTS,
        **data,
    }
    inventory = Inventory(([("@fake/gpu-1", host_data)], {}))
    state = State(inventory, Config(FAIL_PERCENT=0, **config))
    connect_all(state)
    host = inventory.get_host("@fake/gpu-1")
    with ctx_state.use(state), ctx_inventory.use(inventory), ctx_config.use(state.config.copy()), ctx_host.use(host):
        deploy()
    arguments = [state.get_op_data_for_host(host, op).global_arguments for op in host.op_hash_order]
    assert len(arguments) > 20, "the deploy planned too little to judge"
    return {(args["_sudo"], args["_sudo_user"]) for args in arguments}


@pytest.mark.parametrize(
    ("data", "config", "expected"),
    [
        ({"ssh_user": "ubuntu"}, {}, {(True, None)}),
        ({"ssh_user": "root"}, {}, {(False, None)}),
        ({}, {}, {(False, None)}),
        ({}, {"SUDO": True, "SUDO_USER": "deployer"}, {(True, "deployer")}),
        ({"ssh_user": "root"}, {"SUDO": True}, {(True, None)}),
        ({"ssh_user": "ubuntu", "_sudo": False}, {}, {(False, None)}),
        ({"ssh_user": "ubuntu", "_sudo": False}, {"SUDO": True}, {(False, None)}),
        ({"ssh_user": "ubuntu", "_sudo_user": "svc"}, {}, {(True, "svc")}),
    ],
    ids=[
        "non-root-ssh-user",
        "root-ssh-user",
        "local",
        "cli-sudo-user",
        "cli-sudo-beats-root-default",
        "host-no-sudo",
        "host-data-beats-cli",
        "host-sudo-user",
    ],
)
def test_privilege_follows_pyinfra(
    data: dict[str, Any], config: dict[str, Any], expected: set[tuple[bool, str | None]]
) -> None:
    assert planned_privilege(data, **config) == expected
