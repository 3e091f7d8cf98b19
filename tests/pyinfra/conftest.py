"""Each in-process deploy test gets an empty verdict cache (the sim tests keep the session's across runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ms4fleet.verdicts import CACHE_ENV


@pytest.fixture(autouse=True)
def _fresh_verdicts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if request.node.get_closest_marker("sim") is None:
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "verdicts"))
