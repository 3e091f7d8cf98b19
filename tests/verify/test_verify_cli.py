"""``ms4fleet verify`` as a command: output, exit codes 0/1/2, key file, log file, check selection."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ms4fleet import verify_cli
from tests.verify.fakevllm import MODEL, FakeVllm, Reply


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ms4fleet")
    verify_cli.register(parser.add_subparsers())
    args = parser.parse_args(["verify", *argv])
    return int(args.func(args))


def test_pass_prints_every_check_and_exits_0(fake: FakeVllm, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([fake.url, "--model", MODEL]) == 0
    out = capsys.readouterr().out
    for name in ("health", "models", "completion", "tools", "reasoning", "streaming", "metrics"):
        assert f"PASS  {name}" in out
    assert "SKIP  image" in out and "ttft" in out and out.rstrip().endswith("PASS (exit 0)")


def test_json_report(fake: FakeVllm, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([fake.url, "--model", MODEL, "--json", "--checks", "health,metrics"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == 0 and report["url"] == fake.url
    assert [c["name"] for c in report["checks"] if c["status"] == "pass"] == ["health", "metrics"]


def test_profile_selects_image_for_a_multimodal_model(fake: FakeVllm, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([fake.url, "--model", MODEL, "--profile", "mistral-small-4-fp8", "--json"]) == 0
    checks = {c["name"]: c["status"] for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["image"] == "pass" and checks["reasoning"] == "pass"
    assert main([fake.url, "--model", MODEL, "--profile", "gpt-oss-120b", "--json"]) == 0
    checks = {c["name"]: c["status"] for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["image"] == "skip" and checks["reasoning"] == "skip"


def test_failure_exits_1_and_names_the_cause_from_the_log(
    fake: FakeVllm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "vllm.log"
    log.write_text("INFO starting\n")

    def crash(_: dict) -> Reply:
        # The log is read after the failing request: what it writes now must be seen.
        log.write_text("INFO starting\nERROR torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\n")
        return Reply(500, {"error": {"message": "Internal Server Error"}})

    fake.chat_route("plain", crash)
    assert main([fake.url, "--model", MODEL, "--checks", "completion", "--log-file", str(log)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  completion" in out
    assert "cause: cuda-oom" in out and "fix:" in out and "CUDA out of memory" in out
    assert out.rstrip().endswith("FAIL (exit 1)")


def test_api_key_comes_from_a_file_and_is_not_printed(
    fake: FakeVllm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.api_key = "sk-secret-0123456789"
    key = tmp_path / "key"
    key.write_text("sk-secret-0123456789\n")
    assert main([fake.url, "--model", MODEL, "--checks", "models", "--api-key-file", str(key)]) == 0
    assert main([fake.url, "--model", MODEL, "--checks", "models", "--json"]) == 1
    assert "sk-secret" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checks", "health,vibes"], "--checks: unknown check(s) vibes"),
        (["--skip", "nope"], "--skip: unknown check(s) nope"),
        (["--api-key-file", "/nonexistent/key"], "--api-key-file: cannot read /nonexistent/key"),
        (["--log-file", "/nonexistent/log"], "--log-file: /nonexistent/log is not a readable file"),
    ],
)
def test_bad_usage_exits_2_before_any_request(
    fake: FakeVllm, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([fake.url, "--model", MODEL, *argv]) == 2
    assert message in capsys.readouterr().err
    assert fake.requests == []


def test_unreachable_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["http://127.0.0.1:9", "--model", MODEL, "--timeout", "5"]) == 2
    assert capsys.readouterr().out.rstrip().endswith("UNREACHABLE (exit 2)")
