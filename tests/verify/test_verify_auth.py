"""The auth check against a fake vLLM serving, on one port, either what vLLM 0.32 serves (every non-/v1 route
open: /invocations reaches the model without the key) or what a locked endpoint serves (only /v1/ behind
the key and /health), so the check is seen to fail and to pass for the right reasons."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from ms4fleet import verify_cli
from ms4fleet.verify import CHECKS, DEFAULT_CHECKS, auth_probes, verify
from tests.verify.fakevllm import MODEL, FakeVllm, Reply, running_fake

KEY = "sk-fake-auth-0123456789"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ms4fleet")
    verify_cli.register(parser.add_subparsers())
    args = parser.parse_args(["verify", *argv])
    return int(args.func(args))


@pytest.fixture
def vulnerable() -> Iterator[FakeVllm]:
    """vLLM as it is: the key guards /v1, /v2, /inference and /cohere; everything else answers."""
    with running_fake() as server:
        server.api_key = KEY
        server.serve_unguarded_routes()
        yield server


@pytest.fixture
def locked() -> Iterator[FakeVllm]:
    """An endpoint that serves /health and /v1/ (behind the key) alone; /metrics is on another listener."""
    with running_fake() as server:
        server.api_key = KEY
        del server.routes[("GET", "/metrics")]
        yield server


def test_vulnerable_endpoint_fails_naming_each_open_route(vulnerable: FakeVllm) -> None:
    report = verify(vulnerable.url, MODEL, api_key=KEY, checks={"auth", "completion"}, timeout_s=10)
    auth = report.check("auth")
    assert auth.status == "fail" and report.exit_code == 1
    for opened in ("POST /invocations 400", "POST /tokenize 400", "GET /openapi.json 200", "GET /metrics 200"):
        assert opened in auth.detail
    # /inference/* is under vLLM's key check: refused, so not named.
    assert "/inference" not in auth.detail and "/v1/chat/completions" not in auth.detail
    assert report.check("completion").status == "pass", "the key itself works"


def test_locked_endpoint_passes(locked: FakeVllm) -> None:
    report = verify(locked.url, MODEL, api_key=KEY, checks={"auth", "completion"}, timeout_s=10)
    assert report.check("auth").status == "pass", report.to_dict()
    assert report.ok
    asked = {(method, path) for method, path, _ in locked.requests}
    assert set(auth_probes()) <= asked, "every route of the catalog but /v1/* and /health was asked"
    assert ("GET", "/health") not in asked and ("POST", "/invocations") in asked


def test_chat_without_the_key_must_be_refused(locked: FakeVllm) -> None:
    locked.api_key = None  # an endpoint with no key at all
    report = verify(locked.url, MODEL, checks={"auth"}, timeout_s=10)
    assert report.check("auth").status == "fail"
    assert report.check("auth").detail.endswith("(want 401/404): POST /v1/chat/completions 200")


def test_a_forbidden_status_is_not_locked(locked: FakeVllm) -> None:
    # Only 401 (refused for want of the key) or 404 (not served) count: a 403 or a redirect still exposes it.
    locked.route("GET", "/docs", lambda _: Reply(403, {"detail": "Forbidden"}))
    locked.route("POST", "/invocations", lambda _: Reply(302, {}))
    detail = verify(locked.url, MODEL, api_key=KEY, checks={"auth"}, timeout_s=10).check("auth").detail
    assert "GET /docs 403" in detail and "POST /invocations 302" in detail


def test_open_endpoint_skips_and_says_so(vulnerable: FakeVllm) -> None:
    report = verify(vulnerable.url, MODEL, checks={"auth"}, timeout_s=10, open_endpoint=True)
    assert report.check("auth").status == "skip"
    assert "open by configuration (serving.open_endpoint)" in report.check("auth").detail
    assert report.ok and vulnerable.requests == []


def test_auth_is_a_check_but_not_a_default_yet() -> None:
    assert "auth" in CHECKS and "auth" not in DEFAULT_CHECKS


def test_cli_runs_auth_with_the_key_file_and_skips_it_when_open(
    vulnerable: FakeVllm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "api_key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    common = [vulnerable.url, "--model", MODEL, "--api-key-file", str(key_file), "--checks", "auth,completion"]
    assert main(common) == 1
    out = capsys.readouterr().out
    assert "FAIL  auth" in out and "POST /invocations 400" in out and KEY not in out
    assert main([*common, "--open-endpoint"]) == 0
    assert "SKIP  auth" in capsys.readouterr().out
