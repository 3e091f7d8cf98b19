"""Session-wide test isolation."""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.statedir import STATE_ENV
from ms4fleet.verdicts import CACHE_ENV

APT_KEYS = Path(__file__).parent / "data" / "apt-keys"


@pytest.fixture
def apt_key_server() -> Iterator[str]:
    """A loopback HTTP server of the test apt keys (tests/data/apt-keys): ``{url}/ed25519.asc``."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(APT_KEYS), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True, scope="session")
def _private_verdict_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """pyinfra runs (in process and the ones tests start) keep converged verdicts in a directory of this
    session's, never the user's ~/.cache."""
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("verdicts"))
    yield
    if before is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(autouse=True, scope="session")
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The controller state (the generated API key, rollout journals) of this session's runs, in process and
    in the engines they start, lives in a directory of the session's, never the user's ~/.local/state."""
    before = os.environ.get(STATE_ENV)
    os.environ[STATE_ENV] = str(tmp_path_factory.mktemp("controller-state"))
    yield
    if before is None:
        del os.environ[STATE_ENV]
    else:
        os.environ[STATE_ENV] = before


# Fixtures that bring up something under a fixed name (a sim fleet, the rollout world), and the scheduling
# scope of a module that names one: a session fixture's modules share a worker; so do the modules that import a
# module fixture from another (each builds its own copy under the same fleet name: on two workers at once, one
# tore down the other's load balancer in CI).
_SHARED_FIXTURES = {
    "sim_fleet": "sim_fleet",
    "sim_faults": "sim_faults",
    "driver_hgx": "driver_hgx",
    "driver_pcie": "driver_pcie",
    "docker_hgx": "docker_hgx",
    "rollout_world": "rollout_world",
    "serving_world": "rollout_world",  # test_sim_rollout_deploy's, built on the rollout world
    "docker_world": "docker_world",  # test_sim_rollout_digest's fleet "digest"
}
_TESTS = Path(__file__).resolve().parent


@functools.cache
def _module_scope(module: str) -> str:
    """A test module's scheduling scope under pytest-xdist: the module itself (its module fixtures name their
    sim fleets, so two workers must never run its tests), or the first shared fixture its source names, so
    every module of one session fleet runs on the same worker and the fleet comes up once."""
    source = (_TESTS.parent / module).read_text(encoding="utf-8") if module.endswith(".py") else ""
    return next((scope for name, scope in _SHARED_FIXTURES.items() if re.search(rf"\b{name}\b", source)), module)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``pytest -n N``: tests go to workers a scope (module, or shared fleet) at a time.

    (xdist's own ``--dist loadgroup`` markers do not reach its scheduler under pytest 9, whose node ids
    are no longer set through ``_nodeid``; scoping by module is what the fleets need anyway.)"""
    from xdist.scheduler import LoadScopeScheduling

    class FleetScopeScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _module_scope(nodeid.split("::", 1)[0])

    return FleetScopeScheduling(config, log)
