"""Fixtures for the verifier tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.verify.fakevllm import FakeVllm, running_fake


@pytest.fixture
def fake() -> Iterator[FakeVllm]:
    with running_fake() as server:
        yield server
