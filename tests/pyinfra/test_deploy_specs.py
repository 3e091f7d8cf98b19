"""Spec-style tests of the whole host deploy on pyinfra's fake connector: given host data and canned fact
outputs (tests/data/pyinfra/deploy/*.json), each operation plans exactly these commands, or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pyinfra.harness import SPECS, load_spec, plan

SPEC_FILES = sorted((SPECS / "deploy").glob("*.json"))


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.stem for p in SPEC_FILES])
def test_deploy_spec(path: Path) -> None:
    spec = load_spec(path)
    planned = plan(spec["host_data"], spec["responses"])
    for name, commands in spec.get("commands", {}).items():
        assert name in planned, f"no operation {name!r}; planned: {list(planned)}"
        assert planned[name] == commands, name
    for name, fragment in spec.get("contains", {}).items():
        assert name in planned, f"no operation {name!r}; planned: {list(planned)}"
        assert any(fragment in command for command in planned[name]), (name, planned[name])
    for name, upload in spec.get("uploads", {}).items():
        assert upload in planned[name], (name, planned[name])
    for name in spec.get("noop", []):
        assert planned.get(name) == "noop", (name, planned.get(name))
    for name in spec.get("absent", []):
        assert name not in planned, name
    if "operations" in spec:
        assert list(planned) == spec["operations"]
