"""Session-wide test isolation."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ms4fleet.verdicts import CACHE_ENV


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
