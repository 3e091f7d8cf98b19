"""The core's fleet-wide rules (``ms4fleet.inventory.validate_hosts``) on hosts as the engines' loaders hand
them over: ties between groups by each engine's precedence, canonical host names, one machine once, serving
ports behind a shared address, and what a run that serves needs (weights, secret variables set)."""

from __future__ import annotations

from typing import Any

import pytest

from ms4fleet.config import ConfigError
from ms4fleet.inventory import GroupSettings, RawHost, validate_hosts

GPU = {"kind": "h200-sxm", "count": 8}
WEIGHTS = {"source": "path", "path": "/srv/models", "revision": "3f" * 20}


def _host(
    name: str = "gpu-01", groups: tuple[GroupSettings, ...] = (), own: frozenset[str] = frozenset(), **data: Any
) -> RawHost:
    merged = {"ms4fleet_gpu": GPU, "ms4fleet_weights": WEIGHTS, **data}
    return RawHost(name, tuple(g.name for g in groups), merged, groups, own)


def _error(*hosts: RawHost, deploying: bool = False) -> str:
    with pytest.raises(ConfigError) as err:
        validate_hosts(hosts, deploying=deploying)
    return str(err.value)


def test_two_groups_of_equal_rank_disagreeing_is_refused_naming_both() -> None:
    groups = (
        GroupSettings("h200", (1,), {"ms4fleet_gpu": GPU}),
        GroupSettings("b200", (1,), {"ms4fleet_gpu": {"kind": "b200", "count": 8}}),
    )
    assert _error(_host(groups=groups)).startswith(
        "gpu-01: ms4fleet_gpu is set differently by groups 'b200' and 'h200', neither of which overrides the other"
    )


def test_a_higher_rank_the_host_or_the_same_value_is_no_tie() -> None:
    child_over_parent = (
        GroupSettings("fleet", (1, 1), {"ms4fleet_serving": {"max_num_seqs": 64}}),
        GroupSettings("canary", (2, 1), {"ms4fleet_serving": {"max_num_seqs": 8}}),
    )
    siblings = (
        GroupSettings("a", (1, 1), {"ms4fleet_serving": {"max_num_seqs": 64}}),
        GroupSettings("b", (1, 1), {"ms4fleet_serving": {"max_num_seqs": 8}}),
    )
    agreeing = (GroupSettings("a", (1,), {"ms4fleet_gpu": GPU}), GroupSettings("b", (1,), {"ms4fleet_gpu": GPU}))
    hosts = [
        _host("gpu-01", child_over_parent),
        _host("gpu-02", siblings, own=frozenset({"ms4fleet_serving"})),
        _host("gpu-03", agreeing),
    ]
    assert [h.name for h in validate_hosts(hosts)] == ["gpu-01", "gpu-02", "gpu-03"]
    # A lower group (all) disagreeing with the winner is precedence, not a tie.
    below = (GroupSettings("all", (0,), {"ms4fleet_gpu": {"kind": "b200", "count": 8}}), agreeing[0])
    assert validate_hosts([_host("gpu-04", below)])[0].config.gpu.kind == "h200-sxm"


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["gpu-01", "GPU-01"], "'GPU-01': name is host 'gpu-01' written another way"),
        (["gpu-01", "\uff47pu-01"], "'\\uff47pu-01': name is host 'gpu-01' written another way"),
        (["gpu-\u0430"], "'gpu-\\u0430': name holds U+0430 CYRILLIC SMALL LETTER A"),
        (["gpu\u00a001"], "'gpu\\xa001': name holds U+00A0 NO-BREAK SPACE"),
        (["gpu-01\u200d"], "'gpu-01\\u200d': name holds U+200D ZERO WIDTH JOINER"),
        (["gpu-01\n"], "'gpu-01\\n': name holds U+000A"),
    ],
)
def test_host_names_are_canonical(names: list[str], expected: str) -> None:
    message = _error(*(_host(n, ssh_hostname=f"10.0.0.{i}") for i, n in enumerate(names)))
    assert message.startswith(expected), message
    assert "\n" not in message and all(c.isascii() for c in message)


def test_one_machine_written_two_ways() -> None:
    message = _error(_host("a", ssh_hostname="GPU.example."), _host("b", ansible_host="gpu.example"))
    assert message == "b: address gpu.example:22 is also host a: one machine must appear once in the inventory"


def test_ports_behind_a_shared_address() -> None:
    public = {"bind_address": "0.0.0.0"}
    a = _host("vm-a", ssh_hostname="10.0.0.5", ssh_port=2201, ms4fleet_serving=public)
    b = _host("vm-b", ssh_hostname="10.0.0.5", ssh_port=2202, ms4fleet_serving={**public, "port": 8003})
    assert _error(a, b).startswith(
        "vm-b: serving.replicas[0].port=8003 is also a port of host vm-a at the same address 10.0.0.5"
    )
    apart = _host("vm-b", ssh_hostname="10.0.0.5", ssh_port=2202, ms4fleet_serving={**public, "port": 8004})
    loopback = _host("vm-c", ssh_hostname="10.0.0.5", ssh_port=2203)  # each VM's own 127.0.0.1
    assert len(validate_hosts([a, apart, loopback])) == 3


def test_a_run_that_serves_needs_weights_and_its_secret_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    bare = RawHost("gpu-01", (), {"ms4fleet_gpu": GPU})
    assert validate_hosts([bare])[0].config.weights is None  # planning needs none
    assert _error(bare, deploying=True).startswith("gpu-01: weights is missing")
    keyed = _host(ms4fleet_serving={"api_key": {"env": "MS4FLEET_TEST_UNSET"}})
    monkeypatch.delenv("MS4FLEET_TEST_UNSET", raising=False)
    assert _error(keyed, deploying=True).startswith(
        "gpu-01: serving.api_key.env names MS4FLEET_TEST_UNSET, which is unset or empty on this controller"
    )
    monkeypatch.setenv("MS4FLEET_TEST_UNSET", "sk-value-never-shown")
    assert validate_hosts([keyed], deploying=True)[0].name == "gpu-01"
