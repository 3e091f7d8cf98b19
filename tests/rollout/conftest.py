"""The simulated fleet for rollout tests: 4 GPU hosts (native stand-ins) and an nginx load balancer host,
brought up once per session under its own fleet name so it never races other sim tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ms4fleet.statedir import STATE_ENV
from tests.rollout.world import World, world


@pytest.fixture(autouse=True)
def rollout_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's rollouts lock and journal under its own controller state directory."""
    monkeypatch.setenv(STATE_ENV, str(tmp_path / "controller-state"))


@pytest.fixture(scope="session")
def rollout_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from ms4fleet_sim import dockercli

    if not dockercli.daemon_ok():
        pytest.fail("the sim needs a running dockerd: run scripts/ensure-docker.sh first")
    with world(tmp_path_factory.mktemp("rollout-world"), "rollout", gpu_hosts=4) as built:
        yield built
