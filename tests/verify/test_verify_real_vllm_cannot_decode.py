"""The verifier against a REAL vLLM that is healthy but cannot decode: a tiny model with head_dim 16,
which vLLM's CPU attention kernel rejects on the first decode (shared reference test-world.md). /health
answers 200; the completion check fails and the report names the cause from the service log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ms4fleet.verify import verify
from tests.support.vllm_cpu import Server, build_tiny_model, serve

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("tiny-vllm-hd16")
    model = build_tiny_model(work / "model", head_dim=16)
    with serve(model, work / "vllm.log") as server:
        yield server


def test_healthy_but_cannot_decode_fails_with_a_named_cause(broken_server: Server) -> None:
    report = verify(
        broken_server.url,
        broken_server.served_name,
        checks={"health", "models", "completion", "streaming", "metrics"},
        logs=broken_server.log_text,
        timeout_s=120,
    )
    assert report.check("health").status == "pass"  # healthy ...
    assert report.check("models").status == "pass"
    assert report.check("completion").status == "fail", report.to_dict()  # ... but cannot decode
    assert "HTTP 500" in report.check("completion").detail
    # vLLM's API server exits after the engine died: a failure (exit 1), not an unreachable endpoint (2).
    assert report.exit_code == 1 and not report.unreachable
    # The specific cause, read off the server's log, before the generic engine death it explains.
    assert [cause.id for cause in report.causes] == ["attention-unsupported", "engine-dead"], report.to_dict()
    assert report.causes[0].details == {"head_dim": "16"}
    assert "Unsupported CPU attention configuration" in report.causes[0].evidence
