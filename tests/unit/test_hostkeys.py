"""Host keys are checked strictly by default, everywhere the controller runs ssh (ms4fleet.hostkeys)."""

from __future__ import annotations

from typing import Any

import pytest

from ms4fleet import hostkeys
from ms4fleet.config import ConfigError
from ms4fleet.inventory import RawHost, validate_hosts
from ms4fleet.weights.stage import HostTarget, target_for

GPU = {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 8}}


def _validate(**data: Any) -> str:
    (host,) = validate_hosts([RawHost("gpu-1", ("gpus",), {**GPU, **data})])
    return hostkeys.policy(host.name, host.data)


def test_the_default_is_strict() -> None:
    assert _validate() == "yes"
    assert _validate(ssh_strict_host_key_checking="yes") == "yes"
    assert _validate(ansible_ssh_common_args="-o UserKnownHostsFile=/kh -o StrictHostKeyChecking=yes") == "yes"
    # Every ssh the controller runs (staging, rsync, the Ansible verify tunnel) passes it first.
    assert HostTarget("gpu-1", hostname="h").ssh_argv()[:3] == ["ssh", "-o", "StrictHostKeyChecking=yes"]
    assert target_for("gpu-1", {"hostname": "h"}, {}).host_key_checking == "yes"


def test_trust_on_first_use_only_with_the_flag() -> None:
    assert _validate(ms4fleet_ssh_accept_new=True) == "accept-new"
    assert _validate(ms4fleet_ssh_accept_new=True, ssh_strict_host_key_checking="accept-new") == "accept-new"
    assert _validate(ms4fleet_ssh_accept_new=False) == "yes"
    target = target_for("gpu-1", {"hostname": "h"}, {"ms4fleet_ssh_accept_new": True})
    assert target.ssh_argv()[:3] == ["ssh", "-o", "StrictHostKeyChecking=accept-new"]


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"ssh_strict_host_key_checking": "accept-new"}, "ssh_strict_host_key_checking", "ms4fleet_ssh_accept_new"),
        ({"ssh_strict_host_key_checking": "no"}, "ssh_strict_host_key_checking", "checking host keys is required"),
        ({"ansible_ssh_common_args": "-o StrictHostKeyChecking=no"}, "ansible_ssh_common_args", "required"),
        ({"ansible_ssh_extra_args": "-oStrictHostKeyChecking=accept-new"}, "ansible_ssh_extra_args", "accept_new"),
        ({"ansible_ssh_args": "-o 'stricthostkeychecking off'"}, "ansible_ssh_args", "required"),
        (
            {"ms4fleet_ssh_accept_new": True, "ssh_strict_host_key_checking": "no"},
            "ssh_strict_host_key_checking",
            "required",
        ),
        ({"ms4fleet_ssh_accept_new": "yes"}, "ssh_accept_new", "boolean"),
    ],
)
def test_weaker_settings_are_refused_with_one_line(data: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _validate(**data)
    message = str(err.value)
    assert message.startswith("gpu-1: ") and field in message and words in message and "\n" not in message


def test_pyinfra_connects_with_the_core_checking_whatever_its_data_says() -> None:
    from pyinfra.api import Config, Inventory, State

    from ms4fleet_pyinfra.hostkeys import enforce

    enforce()
    enforce()  # idempotent
    inventory = Inventory(
        (
            [
                ("strict", {}),
                ("told-otherwise", {"ssh_strict_host_key_checking": "no"}),
                ("tofu", {"ms4fleet_ssh_accept_new": True}),
            ],
            {},
        )
    )
    state = State(inventory, Config())
    checking = {host.name: host.connector.data["ssh_strict_host_key_checking"] for host in state.inventory}
    assert checking == {"strict": "yes", "told-otherwise": "yes", "tofu": "accept-new"}


def test_the_deploy_refuses_a_host_pyinfra_reached_with_weaker_checking() -> None:
    from types import SimpleNamespace

    from pyinfra.connectors.ssh import SSHConnector

    from ms4fleet_pyinfra.hostkeys import weaker_than_planned

    def host(used: str, **data: Any) -> Any:
        connector = object.__new__(SSHConnector)
        connector.data = {"ssh_strict_host_key_checking": used}  # type: ignore[typeddict-unknown-key]
        return SimpleNamespace(name="gpu-1", connector=connector, data=data)

    message = weaker_than_planned(host("accept-new"))
    assert message is not None and message.startswith("gpu-1: ") and "\n" not in message
    assert "--data ssh_strict_host_key_checking=yes" in message
    assert weaker_than_planned(host("no", ms4fleet_ssh_accept_new=True)) is not None
    assert weaker_than_planned(host("yes")) is None
    assert weaker_than_planned(host("yes", ms4fleet_ssh_accept_new=True)) is None
    assert weaker_than_planned(host("accept-new", ms4fleet_ssh_accept_new=True)) is None
