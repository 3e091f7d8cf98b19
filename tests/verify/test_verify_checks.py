"""Every verify check passes against a healthy endpoint and fails, for the right reason, when the
endpoint misbehaves in exactly the way that check exists to catch (fake vLLM on loopback)."""

from __future__ import annotations

import json
import socket
from typing import Any

from ms4fleet.verify import CHECKS, verify
from tests.verify.fakevllm import MODEL, FakeVllm, Reply, completion, sse, tool_call

# auth has its own tests (test_verify_auth.py): this fake serves /metrics beside /v1/ and takes no key.
ALL = set(CHECKS) - {"auth"}


def run(fake: FakeVllm, checks: set[str] = ALL, **kwargs: Any) -> Any:
    return verify(fake.url, MODEL, checks=checks, timeout_s=10, **kwargs)


def test_healthy_endpoint_passes_every_check(fake: FakeVllm) -> None:
    report = run(fake)
    wanted = [(name, "pass" if name in ALL else "skip") for name in CHECKS]
    assert [(c.name, c.status) for c in report.checks] == wanted, report.to_dict()
    assert report.exit_code == 0
    assert report.check("streaming").ttft_s is not None
    assert all(c.latency_s is not None and c.latency_s >= 0 for c in report.checks if c.status != "skip")
    assert report.check("metrics").detail == "vllm:num_requests_running=0, vllm:kv_cache_usage_perc=0.25"
    # The checks ran in the documented order, each with the served model name.
    posted = [request for method, path, request in fake.requests if method == "POST"]
    assert all(request["model"] == MODEL for request in posted)
    assert [path for _, path, _ in fake.requests][:2] == ["/health", "/v1/models"]


def test_unreachable_endpoint_exits_2_and_skips_the_rest() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = verify(f"http://127.0.0.1:{port}", MODEL, checks=ALL, timeout_s=5)
    assert report.unreachable and report.exit_code == 2
    assert report.check("health").status == "fail"
    assert {c.status for c in report.checks[1:]} == {"skip"}


def test_health_503_fails(fake: FakeVllm) -> None:
    fake.route("GET", "/health", lambda _: Reply(503, "EngineDeadError"))
    report = run(fake, {"health"})
    assert report.check("health").status == "fail"
    assert "HTTP 503" in report.check("health").detail
    assert report.exit_code == 1


def test_models_must_list_the_served_name(fake: FakeVllm) -> None:
    fake.route("GET", "/v1/models", lambda _: Reply(body={"data": [{"id": "other-model"}]}))
    report = run(fake, {"models"})
    assert report.check("models").status == "fail"
    assert "other-model" in report.check("models").detail and MODEL in report.check("models").detail


def test_completion_that_does_not_decode_fails_and_names_the_dead_engine(fake: FakeVllm) -> None:
    body = {"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the root cause."}}
    fake.chat_route("plain", lambda _: Reply(500, body))
    report = run(fake, {"health", "completion"})
    assert report.check("health").status == "pass"  # healthy ...
    assert report.check("completion").status == "fail"  # ... but cannot decode
    assert "HTTP 500" in report.check("completion").detail
    assert [cause.id for cause in report.causes] == ["engine-dead"]


def test_completion_with_nothing_generated_fails(fake: FakeVllm) -> None:
    fake.chat_route("plain", lambda _: completion(content="", tokens=0))
    report = run(fake, {"completion"})
    assert report.check("completion").status == "fail"
    assert "nothing decoded" in report.check("completion").detail


def test_completion_without_finish_reason_fails(fake: FakeVllm) -> None:
    fake.chat_route("plain", lambda _: completion(finish=None))
    report = run(fake, {"completion"})
    assert report.check("completion").status == "fail"
    assert "finish_reason None" in report.check("completion").detail


def test_log_names_the_cause_of_a_failed_decode(fake: FakeVllm) -> None:
    fake.chat_route("plain", lambda _: Reply(500, {"error": {"message": "Internal Server Error"}}))
    log = (
        "(EngineCore pid=812) ERROR 11-29 [core.py:1021] ValueError: Cannot make_shape_compatible: "
        "incompatible dimensions at index 1: 256 and 512\n"
        "(APIServer pid=700) ERROR vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.\n"
    )
    report = run(fake, {"completion"}, logs=log)
    assert [cause.id for cause in report.causes] == ["triton-mla", "engine-dead"]
    assert "FLASH_ATTN_MLA" in report.causes[0].fix
    assert "256 and 512" in report.causes[0].evidence


def test_passing_report_does_not_scan_logs(fake: FakeVllm) -> None:
    report = run(fake, {"completion"}, logs="torch.OutOfMemoryError: CUDA out of memory.")
    assert report.ok and report.causes == []


def test_tools_without_tool_calls_fail(fake: FakeVllm) -> None:
    fake.chat_route("tools", lambda _: completion(content="It is sunny."))
    report = run(fake, {"tools"})
    assert report.check("tools").status == "fail"
    assert "no tool_calls" in report.check("tools").detail


def test_tools_with_arguments_outside_the_schema_fail(fake: FakeVllm) -> None:
    fake.chat_route("tools", lambda _: tool_call(arguments='{"city": "Rome", "unit": "celsius"}'))
    report = run(fake, {"tools"})
    assert report.check("tools").status == "fail"
    assert "break the tool schema" in report.check("tools").detail and "Rome" in report.check("tools").detail


def test_tools_with_unparsable_arguments_fail(fake: FakeVllm) -> None:
    fake.chat_route("tools", lambda _: tool_call(arguments='{"city": "Paris", "unit": '))
    report = run(fake, {"tools"})
    assert report.check("tools").status == "fail"
    assert "not JSON" in report.check("tools").detail


def test_tools_calling_an_unknown_function_fail(fake: FakeVllm) -> None:
    fake.chat_route("tools", lambda _: tool_call(name="rm_rf"))
    report = run(fake, {"tools"})
    assert report.check("tools").status == "fail"
    assert "rm_rf" in report.check("tools").detail


def test_tools_request_forces_a_call(fake: FakeVllm) -> None:
    run(fake, {"tools"})
    (request,) = [r for m, _, r in fake.requests if m == "POST"]
    assert request["tool_choice"] == "required" and request["parallel_tool_calls"] is False
    assert request["tools"][0]["function"]["strict"] is True
    assert request["tools"][0]["function"]["name"] == "get_weather"


def test_reasoning_high_without_reasoning_fails(fake: FakeVllm) -> None:
    fake.chat_route("reasoning", lambda _: completion(content="391"))
    report = run(fake, {"reasoning"})
    assert report.check("reasoning").status == "fail"
    assert "'high' returned no reasoning" in report.check("reasoning").detail


def test_reasoning_none_that_still_reasons_fails(fake: FakeVllm) -> None:
    fake.chat_route("reasoning", lambda _: completion(content="391", reasoning="thinking anyway"))
    report = run(fake, {"reasoning"})
    assert report.check("reasoning").status == "fail"
    assert "'none' still returned reasoning" in report.check("reasoning").detail


def test_reasoning_accepts_the_legacy_field(fake: FakeVllm) -> None:
    def legacy(request: dict[str, Any]) -> Reply:
        if request["reasoning_effort"] == "high":
            return completion(content="391", reasoning_content="17 * 23 = 391")
        return completion(content="391")

    fake.chat_route("reasoning", legacy)
    assert run(fake, {"reasoning"}).check("reasoning").status == "pass"


def test_reasoning_rejected_effort_fails(fake: FakeVllm) -> None:
    fake.chat_route("reasoning", lambda _: Reply(400, {"error": {"message": "reasoning_effort must be none or high"}}))
    report = run(fake, {"reasoning"})
    assert report.check("reasoning").status == "fail"
    assert "HTTP 400" in report.check("reasoning").detail


def test_stream_without_done_fails(fake: FakeVllm) -> None:
    fake.chat_route("stream", lambda _: sse({"content": "One"}, done=False))
    report = run(fake, {"streaming"})
    assert report.check("streaming").status == "fail"
    assert "without [DONE]" in report.check("streaming").detail


def test_stream_without_tokens_fails(fake: FakeVllm) -> None:
    fake.chat_route("stream", lambda _: sse({"role": "assistant"}, {"content": ""}))
    report = run(fake, {"streaming"})
    assert report.check("streaming").status == "fail"
    assert "no tokens" in report.check("streaming").detail


def test_stream_error_event_fails(fake: FakeVllm) -> None:
    error = json.dumps({"error": {"message": "EngineDeadError: engine died", "code": 500}})
    fake.chat_route("stream", lambda _: Reply(body=[error, "[DONE]"]))
    report = run(fake, {"streaming"})
    assert report.check("streaming").status == "fail"
    assert [cause.id for cause in report.causes] == ["engine-dead"]


def test_image_rejected_fails(fake: FakeVllm) -> None:
    fake.chat_route("image", lambda _: Reply(400, {"error": {"message": "This model does not support images"}}))
    report = run(fake, {"image"})
    assert report.check("image").status == "fail"
    assert "does not support images" in report.check("image").detail


def test_image_request_carries_a_png(fake: FakeVllm) -> None:
    run(fake, {"image"})
    (request,) = [r for m, _, r in fake.requests if m == "POST"]
    url = request["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,iVBORw0KGgo")


def test_metrics_without_vllm_gauges_fail(fake: FakeVllm) -> None:
    fake.route("GET", "/metrics", lambda _: Reply(body="process_cpu_seconds_total 1.0\n"))
    report = run(fake, {"metrics"})
    assert report.check("metrics").status == "fail"
    assert "vllm:num_requests_running" in report.check("metrics").detail
    assert "vllm:kv_cache_usage_perc" in report.check("metrics").detail


def test_metrics_accept_the_deprecated_kv_gauge(fake: FakeVllm) -> None:
    text = 'vllm:num_requests_running{model_name="m"} 2.0\nvllm:gpu_cache_usage_perc{model_name="m"} 0.5\n'
    fake.route("GET", "/metrics", lambda _: Reply(body=text))
    report = run(fake, {"metrics"})
    assert report.check("metrics").status == "pass"
    assert report.check("metrics").detail == "vllm:num_requests_running=2, vllm:gpu_cache_usage_perc=0.5"


def test_api_key_is_sent_as_bearer(fake: FakeVllm) -> None:
    fake.api_key = "sk-test-123"
    assert run(fake, {"models", "completion"}, api_key="sk-test-123").ok
    refused = run(fake, {"models"})
    assert refused.check("models").status == "fail" and "HTTP 401" in refused.check("models").detail


def test_unknown_check_is_refused(fake: FakeVllm) -> None:
    try:
        run(fake, {"health", "vibes"})
    except ValueError as exc:
        assert "vibes" in str(exc)
    else:
        raise AssertionError("an unknown check name was accepted")


def test_unselected_checks_are_skipped(fake: FakeVllm) -> None:
    report = run(fake, {"health"})
    assert {c.name for c in report.checks if c.status == "skip"} == set(CHECKS) - {"health"}
    assert [path for _, path, _ in fake.requests] == ["/health"]


def test_server_that_dies_mid_run_is_a_failure_not_unreachable(fake: FakeVllm) -> None:
    """vLLM's API server exits after an EngineDeadError: later checks find the port closed. The endpoint
    was reachable, so this is a failed verification (exit 1) with the rest skipped, not exit 2."""

    def crash(_: dict[str, Any]) -> Reply:
        fake.stop_listening()
        return Reply(500, {"error": {"message": "EngineCore encountered an issue."}})

    fake.chat_route("plain", crash)
    report = run(fake, {"health", "completion", "streaming", "metrics"})
    assert report.exit_code == 1 and not report.unreachable
    assert report.check("completion").status == "fail"
    assert report.check("streaming").status == "fail"
    assert "stopped answering during the 'streaming' check" in report.check("streaming").detail
    assert report.check("metrics").status == "skip"
    assert [cause.id for cause in report.causes] == ["engine-dead"]


def test_sdk_check_reads_every_answer_through_the_openai_client(fake: FakeVllm) -> None:
    fake.api_key = "sk-test-123"
    report = run(fake, {"sdk"}, api_key="sk-test-123")
    sdk = report.check("sdk")
    assert sdk.status == "pass", sdk.detail
    assert "chat 3 tokens, stream 2 chunks, tool call get_weather(" in sdk.detail
    posted = [request for method, path, request in fake.requests if method == "POST"]
    assert [bool(r.get("stream")) for r in posted] == [False, True, False]
    assert posted[2]["tools"][0]["function"]["name"] == "get_weather" and posted[2]["tool_choice"] == "required"


def test_sdk_check_fails_on_an_answer_the_raw_checks_accept_but_the_client_cannot_read(fake: FakeVllm) -> None:
    """vLLM always stamps ``created``; an answer without it passes the raw-HTTP completion check but the
    official client, validating strictly, cannot build a ChatCompletion from it."""

    def unstamped(request: dict[str, Any]) -> Reply:
        reply = completion()
        del reply.body["created"]
        return reply

    fake.chat_route("plain", unstamped)
    report = run(fake, {"completion", "sdk"})
    assert report.check("completion").status == "pass"
    sdk = report.check("sdk")
    assert sdk.status == "fail" and report.exit_code == 1
    assert sdk.detail.startswith("chat completion: the openai SDK rejected the answer:") and "created" in sdk.detail


def test_sdk_check_fails_a_tool_call_that_breaks_the_schema(fake: FakeVllm) -> None:
    fake.chat_route("tools", lambda _: tool_call(arguments='{"city": "Atlantis", "unit": "celsius"}'))
    sdk = run(fake, {"sdk"}).check("sdk")
    assert sdk.status == "fail"
    assert sdk.detail.startswith("tool call: arguments break the tool schema: 'Atlantis' is not one of")


def test_sdk_check_names_the_step_and_status_of_a_refused_request(fake: FakeVllm) -> None:
    fake.api_key = "sk-right"
    sdk = run(fake, {"sdk"}, api_key="sk-wrong").check("sdk")
    assert sdk.status == "fail"
    assert sdk.detail.startswith("chat completion: HTTP 401")
    assert "sk-wrong" not in sdk.detail


def test_sdk_check_fails_a_stream_without_content(fake: FakeVllm) -> None:
    fake.chat_route("stream", lambda _: sse({"role": "assistant"}))
    sdk = run(fake, {"sdk"}).check("sdk")
    assert sdk.status == "fail" and sdk.detail == "stream: no content chunks and no usage"
