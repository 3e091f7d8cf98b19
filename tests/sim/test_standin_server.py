"""The vLLM stand-in as a local process on loopback: endpoints, start-up checks, fault switches.

Each test starts ``python -m ms4fleet_sim.standin serve ...`` with a temporary model directory (sparse
weight files: sizes without disk use), a temporary ``gpus.json`` and ``faults.json``, and talks HTTP to it.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ms4fleet import metrics

H200_TOTAL = 150754820096
H200_FREE = 150109880320
GIB = 1 << 30
MS4_BYTES_PER_TOKEN = (256 + 64) * 36 * 2
TRITON_MLA_ERROR = "ValueError: Cannot make_shape_compatible: incompatible dimensions at index 1: 256 and 512"
ENGINE_DEAD = "EngineCore encountered an issue. See stack trace (above) for the root cause."
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 2},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "detailed": {"type": "boolean"},
                "hours": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
                "where": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat", "lon"],
                },
                "note": {"type": "string"},
            },
            "required": ["city", "days", "unit", "detailed", "hours", "where"],
        },
    },
}
MS4_FLAGS = (
    "--served-model-name",
    "mistral-small-4",
    "--tokenizer-mode",
    "mistral",
    "--config-format",
    "mistral",
    "--load-format",
    "mistral",
    "--tool-call-parser",
    "mistral",
    "--enable-auto-tool-choice",
    "--reasoning-parser",
    "mistral",
    "--max-model-len",
    "262144",
    "--tensor-parallel-size",
    "2",
    "--attention-backend",
    "FLASH_ATTN_MLA",
)


# -- fixtures and helpers ----------------------------------------------------------------------------
def ms4_model(directory: Path, weight_bytes: int = 111_000_000_000) -> Path:
    """A Mistral-native checkpoint shaped like Mistral Small 4 (MLA, kv_lora_rank 256), sparse weights."""
    directory.mkdir(parents=True, exist_ok=True)
    params = {
        "dim": 4096,
        "n_layers": 36,
        "head_dim": 128,
        "n_heads": 32,
        "n_kv_heads": 32,
        "vocab_size": 131072,
        "q_lora_rank": 1024,
        "kv_lora_rank": 256,
        "qk_rope_head_dim": 64,
        "max_position_embeddings": 1048576,
    }
    (directory / "params.json").write_text(json.dumps(params))
    (directory / "tekken.json").write_text("{}")
    with open(directory / "consolidated-00001-of-00001.safetensors", "wb") as weights:
        weights.truncate(weight_bytes)
    return directory


def gqa_model(directory: Path, weight_bytes: int = 16_000_000_000) -> Path:
    """A Hugging Face checkpoint with GQA (8 KV heads of 128) and an HF tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
    }
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "tokenizer.json").write_text("{}")
    with open(directory / "model-00001-of-00001.safetensors", "wb") as weights:
        weights.truncate(weight_bytes)
    return directory


def gpus(count: int = 2, free: int = H200_FREE) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "host_index": i,
            "uuid": f"GPU-{i:08d}",
            "name": "NVIDIA H200",
            "memory_total_bytes": H200_TOTAL,
            "memory_free_bytes": free,
        }
        for i in range(count)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def format_gib(amount: int) -> str:
    return f"{round(amount / GIB, 2)}"


@dataclass
class Standin:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    faults: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def set_faults(self, **switches: Any) -> None:
        self.faults.write_text(json.dumps(switches))

    def wait_exit(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Launcher:
    """Starts stand-ins under a temporary directory; stops whatever it started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Standin] = []

    def env(self, gpu_list: list[dict[str, Any]] | None, faults: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("VLLM_API_KEY", "CUDA_VISIBLE_DEVICES")}
        gpus_file = self.root / f"gpus-{len(self.started)}.json"
        if gpu_list is not None:
            gpus_file.write_text(json.dumps(gpu_list))
        env.update(
            {
                "MS4FLEET_SIM_GPUS_FILE": str(gpus_file),
                "MS4FLEET_SIM_FAULTS_FILE": str(faults),
                "MS4FLEET_SIM_RUN_DIR": str(self.root / "no-run-dir"),
                "MS4FLEET_SIM_START_OVERHEAD_S": "0",
                "MS4FLEET_SIM_LOAD_BYTES_PER_S": "1e15",
                # Long enough for a test to see the dead engine (503, 500) before the server shuts down.
                "MS4FLEET_SIM_DEAD_EXIT_S": "1",
                "HF_HOME": str(self.root / "hf-home"),
            }
        )
        env.update(extra)
        return env

    def start(
        self,
        model: Path | str,
        *flags: str,
        gpu_list: list[dict[str, Any]] | None = None,
        faults: dict[str, Any] | None = None,
        wait: bool = True,
        prefix: tuple[str, ...] = ("-m", "ms4fleet_sim.standin"),
        **env: str,
    ) -> Standin:
        index = len(self.started)
        faults_file = self.root / f"faults-{index}.json"
        if faults is not None:
            faults_file.write_text(json.dumps(faults))
        port = free_port()
        log = self.root / f"standin-{index}.log"
        argv = [sys.executable, *prefix, "serve", str(model), "--host", "127.0.0.1", "--port", str(port), *flags]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(gpus() if gpu_list is None else gpu_list, faults_file, **env),
            )
        standin = Standin(proc, port, log, faults_file)
        self.started.append(standin)
        if wait:
            wait_listening(standin)
        return standin

    def run(self, model: Path | str, *flags: str, **kwargs: Any) -> tuple[int, str]:
        """Start a stand-in expected to exit during start-up: (exit status, combined output)."""
        standin = self.start(model, *flags, wait=False, **kwargs)
        return standin.wait_exit(30), standin.output()

    def stop_all(self) -> None:
        for standin in self.started:
            standin.stop()


def wait_listening(standin: Standin, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if standin.proc.poll() is not None:
            raise AssertionError(f"stand-in exited with {standin.proc.returncode}:\n{standin.output()}")
        try:
            with socket.create_connection(("127.0.0.1", standin.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"stand-in did not listen within {timeout} s:\n{standin.output()}")


def sse_events(response: httpx.Response) -> list[Any]:
    """The ``data:`` payloads of an SSE body; asserts it ends with ``[DONE]``."""
    payloads = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


def check_schema(value: Any, schema: dict[str, Any]) -> None:
    """A strict check of the JSON Schema subset the weather tool uses."""
    kind = schema.get("type")
    if "enum" in schema:
        assert value in schema["enum"]
    if kind == "object":
        assert isinstance(value, dict)
        for name in schema.get("required", []):
            assert name in value, f"required property {name} missing"
        for name, item in value.items():
            check_schema(item, schema["properties"][name])
    elif kind == "array":
        assert isinstance(value, list) and len(value) >= schema.get("minItems", 0)
        for item in value:
            check_schema(item, schema["items"])
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool)
        assert schema.get("minimum", value) <= value <= schema.get("maximum", value)
    elif kind == "number":
        assert isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "boolean":
        assert isinstance(value, bool)
    elif kind == "string":
        assert isinstance(value, str) and len(value) >= schema.get("minLength", 0)


def chat(url: str, **body: Any) -> httpx.Response:
    body.setdefault("messages", [{"role": "user", "content": "What is the weather in Paris?"}])
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples with ``labels``, read with the core's parser (prometheus_client's)."""
    found = metrics.total(metrics.parse(text), name, **labels)
    assert found is not None, f"{name} {labels} not in /metrics"
    return found


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def ms4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    """One healthy Mistral-Small-4-like stand-in (TP 2 on two H200s) shared by the endpoint tests."""
    root = tmp_path_factory.mktemp("ms4")
    launcher = Launcher(root)
    standin = launcher.start(ms4_model(root / "model"), *MS4_FLAGS)
    yield standin
    launcher.stop_all()


# -- endpoints ---------------------------------------------------------------------------------------
def test_health_ping_version_models(ms4: Standin) -> None:
    health = httpx.get(f"{ms4.url}/health")
    assert (health.status_code, health.content) == (200, b"")
    assert httpx.get(f"{ms4.url}/ping").status_code == 200
    assert httpx.post(f"{ms4.url}/ping").status_code == 200
    assert httpx.get(f"{ms4.url}/version").json() == {"version": "0.32.0"}
    models = httpx.get(f"{ms4.url}/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["mistral-small-4"]
    assert models["data"][0]["max_model_len"] == 262144
    assert models["data"][0]["owned_by"] == "vllm"
    assert httpx.get(f"{ms4.url}/nope").status_code == 404


def test_chat_content_and_usage(ms4: Standin) -> None:
    response = chat(ms4.url, model="mistral-small-4")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "mistral-small-4"
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant"
    assert "mistral-small-4" in message["content"]
    assert "tool_calls" not in message
    assert message["reasoning"] is None
    usage = body["usage"]
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_max_tokens_truncates(ms4: Standin) -> None:
    body = chat(ms4.url, max_tokens=3).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    assert len(body["choices"][0]["message"]["content"].split()) == 3


def test_chat_unknown_model_is_404(ms4: Standin) -> None:
    response = chat(ms4.url, model="other")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "The model `other` does not exist. Valid aliases: mistral-small-4.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
    }


@pytest.mark.parametrize("tool_choice", ["auto", "required", {"type": "function", "function": {"name": "get_weather"}}])
def test_tool_calls_match_schema(ms4: Standin, tool_choice: Any) -> None:
    other = {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}
    tools = [WEATHER_TOOL, other] if tool_choice != "auto" else [WEATHER_TOOL]
    response = chat(ms4.url, tools=tools, tool_choice=tool_choice)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert re.fullmatch(r"[A-Za-z0-9]{9}", call["id"]), "Mistral tool call ids are 9 alphanumerics"
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    check_schema(arguments, WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]
    assert "note" not in arguments, "only required properties are generated"


def test_tool_choice_none_and_unknown_named_tool(ms4: Standin) -> None:
    plain = chat(ms4.url, tools=[WEATHER_TOOL], tool_choice="none").json()["choices"][0]
    assert "tool_calls" not in plain["message"] and plain["finish_reason"] == "stop"
    missing = chat(ms4.url, tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "x"}})
    assert missing.status_code == 400
    assert missing.json()["error"]["type"] == "BadRequestError"


def test_reasoning_effort_high_none_and_rejected(ms4: Standin) -> None:
    high = chat(ms4.url, reasoning_effort="high").json()["choices"][0]["message"]
    assert high["reasoning"] and "[THINK]" not in high["content"]
    none = chat(ms4.url, reasoning_effort="none").json()["choices"][0]["message"]
    assert none["reasoning"] is None and none["content"]
    for effort in ("low", "medium", "xhigh"):
        rejected = chat(ms4.url, reasoning_effort=effort)
        assert rejected.status_code == 400
        assert rejected.json() == {
            "error": {
                "message": f"reasoning_effort should be one of ['none', 'high'], got {effort}.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        }
    invalid = chat(ms4.url, reasoning_effort="extreme")
    assert invalid.status_code == 400 and "reasoning_effort" in invalid.json()["error"]["message"]


def test_image_content_part(ms4: Standin) -> None:
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": image}}],
        }
    ]
    text_only = chat(ms4.url, messages=[{"role": "user", "content": "Describe"}]).json()
    response = chat(ms4.url, messages=messages)
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["prompt_tokens"] > text_only["usage"]["prompt_tokens"]


def test_chat_streaming(ms4: Standin) -> None:
    plain = chat(ms4.url, reasoning_effort="high").json()["choices"][0]["message"]
    response = chat(ms4.url, reasoning_effort="high", stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert len({e["id"] for e in events}) == 1
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [e["choices"][0]["delta"] for e in events[1:] if e["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == plain["content"]
    assert "".join(d.get("reasoning", "") for d in deltas) == plain["reasoning"]
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == len(deltas) - 1


def test_streamed_tool_call(ms4: Standin) -> None:
    events = sse_events(chat(ms4.url, tools=[WEATHER_TOOL], tool_choice="required", stream=True))
    calls = [d for e in events for d in e["choices"][0]["delta"].get("tool_calls", [])]
    assert len(calls) == 1 and calls[0]["index"] == 0
    assert calls[0]["function"]["name"] == "get_weather"
    check_schema(json.loads(calls[0]["function"]["arguments"]), WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_completions(ms4: Standin) -> None:
    response = httpx.post(f"{ms4.url}/v1/completions", json={"model": "mistral-small-4", "prompt": "Once upon"})
    body = response.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"].strip() and body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 2
    streamed = httpx.post(f"{ms4.url}/v1/completions", json={"prompt": "Once upon", "stream": True})
    events = sse_events(streamed)
    assert "".join(e["choices"][0]["text"] for e in events) == body["choices"][0]["text"]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert httpx.post(f"{ms4.url}/v1/completions", json={"model": "mistral-small-4"}).status_code == 400


def test_metrics_count_requests(ms4: Standin) -> None:
    before = httpx.get(f"{ms4.url}/metrics").text
    usage = chat(ms4.url).json()["usage"]
    text = httpx.get(f"{ms4.url}/metrics").text
    labels = {"model_name": "mistral-small-4", "engine": "0"}
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert f"# TYPE {name} gauge" in text
        assert metric(text, name, **labels) == 0.0
    grew = {
        name: metric(text, name, **labels) - metric(before, name, **labels)
        for name in (
            "vllm:prompt_tokens_total",
            "vllm:generation_tokens_total",
            "vllm:time_to_first_token_seconds_count",
            "vllm:e2e_request_latency_seconds_count",
        )
    }
    assert grew == {
        "vllm:prompt_tokens_total": usage["prompt_tokens"],
        "vllm:generation_tokens_total": usage["completion_tokens"],
        "vllm:time_to_first_token_seconds_count": 1,
        "vllm:e2e_request_latency_seconds_count": 1,
    }
    assert "# TYPE vllm:time_to_first_token_seconds histogram" in text
    assert 'vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="mistral-small-4"}' in text
    assert metric(text, "vllm:request_success_total", finished_reason="stop") >= 1


def test_startup_log_reports_kv_cache(ms4: Standin) -> None:
    log = ms4.output()
    available = float(re.search(r"Available KV cache memory: ([\d.]+) GiB", log).group(1))  # type: ignore[union-attr]
    tokens = int(re.search(r"GPU KV cache size: ([\d,]+) tokens", log).group(1).replace(",", ""))  # type: ignore[union-attr]
    # MLA: 23,040 B per token in BF16, replicated on each of the 2 ranks (the per-GPU budget holds it all).
    assert abs(tokens * MS4_BYTES_PER_TOKEN / GIB - available) < 0.01
    assert "Maximum concurrency for 262,144 tokens per request" in log
    assert log.count("Available KV cache memory") == 2, "one line per tensor-parallel worker"


# -- API key -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["flag", "env"])
def test_api_key_enforced_on_v1_only(launcher: Launcher, tmp_path: Path, how: str) -> None:
    key = "sk-test-0123456789"
    flags = ("--api-key", key) if how == "flag" else ()
    env = {"VLLM_API_KEY": key} if how == "env" else {}
    standin = launcher.start(ms4_model(tmp_path / "model"), *MS4_FLAGS, *flags, **env)
    denied = httpx.get(f"{standin.url}/v1/models")
    assert (denied.status_code, denied.json()) == (401, {"error": "Unauthorized"})
    with httpx.Client(base_url=standin.url) as client:
        # One kept-alive connection: a refused POST must not leave its body behind for the next request.
        body = {"messages": [{"role": "user", "content": "hi"}]}
        refused = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer no"})
        assert refused.status_code == 401
        accepted = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        assert accepted.status_code == 200
    allowed = httpx.get(f"{standin.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert allowed.status_code == 200
    assert httpx.get(f"{standin.url}/health").status_code == 200, "/health is not guarded"
    assert httpx.get(f"{standin.url}/metrics").status_code == 200
    assert key not in standin.output()


# -- tool parsing without the flags ------------------------------------------------------------------
def test_auto_tool_choice_needs_flags_with_hf_tokenizer(launcher: Launcher, tmp_path: Path) -> None:
    standin = launcher.start(gqa_model(tmp_path / "model"), "--max-model-len", "8192")
    auto = chat(standin.url, tools=[WEATHER_TOOL])
    assert auto.status_code == 400
    assert auto.json()["error"]["message"] == (
        '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
    )
    required = chat(standin.url, tools=[WEATHER_TOOL], tool_choice="required")
    assert required.json()["error"]["message"] == 'tool_choice="required" requires --tool-call-parser to be set'
    # An HF-tokenizer model accepts any OpenAI reasoning effort.
    assert chat(standin.url, reasoning_effort="low").status_code == 200
    too_long = chat(standin.url, messages=[{"role": "user", "content": "word " * 9000}])
    assert too_long.status_code == 400
    assert too_long.json()["error"]["message"] == (
        "This model's maximum context length is 8192 tokens. However, your prompt contains 9003 input tokens, "
        "which exceeds this limit even without any output tokens. Please reduce the length of the input prompt."
    )


def test_mistral_tokenizer_without_parsers_leaves_markup_in_content(launcher: Launcher, tmp_path: Path) -> None:
    standin = launcher.start(ms4_model(tmp_path / "model"), "--max-model-len", "65536")
    tool = chat(standin.url, tools=[WEATHER_TOOL]).json()["choices"][0]["message"]
    assert "tool_calls" not in tool and tool["content"].startswith("[TOOL_CALLS]get_weather[ARGS]")
    thinking = chat(standin.url, reasoning_effort="high").json()["choices"][0]["message"]
    assert thinking["reasoning"] is None and thinking["content"].startswith("[THINK]")


# -- fault switches ----------------------------------------------------------------------------------
def test_health_503_switch_flips_live(launcher: Launcher, tmp_path: Path) -> None:
    from ms4fleet.verify import verify

    standin = launcher.start(ms4_model(tmp_path / "model"), *MS4_FLAGS)
    assert httpx.get(f"{standin.url}/health").status_code == 200
    standin.set_faults(health_503=True)
    assert httpx.get(f"{standin.url}/health").status_code == 503
    assert httpx.get(f"{standin.url}/ping").status_code == 503
    report = verify(standin.url, "mistral-small-4", timeout_s=30)
    assert report.check("health").status == "fail" and report.exit_code == 1
    standin.set_faults()
    assert httpx.get(f"{standin.url}/health").status_code == 200


DEAD_BODY = {"error": {"message": ENGINE_DEAD, "type": "InternalServerError", "param": None, "code": 500}}


# Long enough for a test to see the dead engine (503, 500) before the server shuts down, even on a
# loaded machine.
SLOW_DEATH = {"MS4FLEET_SIM_DEAD_EXIT_S": "3"}


def _assert_dead_after(standin: Standin) -> None:
    """After the engine died: 503 health, 500 completions, a graceful shutdown and exit status 0."""
    assert httpx.get(f"{standin.url}/health").status_code == 503
    assert chat(standin.url).status_code == 500
    # vLLM shuts its API server down gracefully and exits 0 after an engine death (vllm#48966).
    assert standin.wait_exit() == 0
    assert "Application shutdown complete." in standin.output()
    assert f"EngineDeadError: {ENGINE_DEAD}" in standin.output()


def _verify_fails_completion(standin: Standin, cause: str) -> None:
    """ms4fleet's verification: health passes, the first decode fails, the log names the cause."""
    from ms4fleet.verify import verify

    checks = ("health", "models", "completion")
    report = verify(standin.url, "mistral-small-4", checks=checks, logs=standin.output, timeout_s=30)
    assert report.check("health").status == "pass"
    completion = report.check("completion")
    assert completion.status == "fail" and json.loads(completion.body) == DEAD_BODY
    assert cause in [c.id for c in report.causes]


def test_crash_on_first_decode_switch(launcher: Launcher, tmp_path: Path) -> None:
    standin = launcher.start(ms4_model(tmp_path / "model"), *MS4_FLAGS, **SLOW_DEATH)
    assert chat(standin.url).status_code == 200
    standin.set_faults(crash_on_first_decode=True)
    assert httpx.get(f"{standin.url}/health").status_code == 200, "healthy until it decodes"
    _verify_fails_completion(standin, "engine-dead")
    _assert_dead_after(standin)


def test_crash_on_first_decode_streaming_fails_the_request(launcher: Launcher, tmp_path: Path) -> None:
    standin = launcher.start(
        ms4_model(tmp_path / "model"), *MS4_FLAGS, faults={"crash_on_first_decode": True}, **SLOW_DEATH
    )
    assert httpx.get(f"{standin.url}/health").status_code == 200
    response = chat(standin.url, stream=True)
    assert (response.status_code, response.json()) == (500, DEAD_BODY)
    _assert_dead_after(standin)


def test_triton_mla_crashes_on_first_decode(launcher: Launcher, tmp_path: Path) -> None:
    flags = [*MS4_FLAGS[:-1], "TRITON_MLA"]
    standin = launcher.start(ms4_model(tmp_path / "model"), *flags, **SLOW_DEATH)
    assert httpx.get(f"{standin.url}/v1/models").status_code == 200
    _verify_fails_completion(standin, "triton-mla")
    _assert_dead_after(standin)
    assert TRITON_MLA_ERROR in standin.output()


def test_triton_mla_is_fine_for_other_models(launcher: Launcher, tmp_path: Path) -> None:
    standin = launcher.start(
        gqa_model(tmp_path / "model"), "--max-model-len", "8192", "--attention-backend", "TRITON_MLA"
    )
    assert chat(standin.url).status_code == 200


def test_decode_delay_switch(launcher: Launcher, tmp_path: Path) -> None:
    standin = launcher.start(ms4_model(tmp_path / "model"), *MS4_FLAGS, faults={"decode_delay_ms": 120})
    chat(standin.url, max_tokens=3)
    text = httpx.get(f"{standin.url}/metrics").text
    # Every token waited at least 120 ms: no inter-token latency in the buckets up to 0.1 s.
    assert metric(text, "vllm:inter_token_latency_seconds_count") == 2
    assert metric(text, "vllm:inter_token_latency_seconds_bucket", le="0.1") == 0
    assert metric(text, "vllm:time_to_first_token_seconds_bucket", le="0.1") == 0


def test_client_leaving_a_stream_ends_its_request(launcher: Launcher, tmp_path: Path) -> None:
    # 300 ms a token: the ~20-token reply streams for seconds, so the request is still running below.
    standin = launcher.start(ms4_model(tmp_path / "model"), *MS4_FLAGS, faults={"decode_delay_ms": 300})
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{standin.url}/v1/chat/completions", json=body) as response:
        next(response.iter_lines())
        running = metric(httpx.get(f"{standin.url}/metrics").text, "vllm:num_requests_running")
        assert running == 1
    deadline = time.monotonic() + 15
    while metric(httpx.get(f"{standin.url}/metrics").text, "vllm:num_requests_running") != 0:
        assert time.monotonic() < deadline, "the abandoned request never finished"
        time.sleep(0.1)
    assert "Traceback" not in standin.output()
    assert chat(standin.url, max_tokens=2).status_code == 200


def test_slow_start_switch_keeps_port_closed(launcher: Launcher, tmp_path: Path) -> None:
    standin = launcher.start(ms4_model(tmp_path / "model"), *MS4_FLAGS, faults={"slow_start_s": 2.5}, wait=False)
    while standin.proc.poll() is None and "Starting to load model" not in standin.output():
        time.sleep(0.05)
    # Loading: the port is bound but not listening, so connections are refused, as with vLLM.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{standin.url}/health")
    wait_listening(standin)
    assert httpx.get(f"{standin.url}/health").status_code == 200
    took = float(re.search(r"Loading weights took ([\d.]+) seconds", standin.output()).group(1))  # type: ignore[union-attr]
    assert took >= 2.5


@pytest.mark.parametrize(
    ("switch", "message"),
    [
        (True, "simulated start-up refusal (fault switch refuse_start)"),
        ("driver says no", "driver says no"),
    ],
)
def test_refuse_start_switch(launcher: Launcher, tmp_path: Path, switch: Any, message: str) -> None:
    status, output = launcher.run(ms4_model(tmp_path / "model"), *MS4_FLAGS, faults={"refuse_start": switch})
    assert status == 1
    assert f"RuntimeError: {message}" in output
    assert "Engine core initialization failed" in output


# -- start-up checks ---------------------------------------------------------------------------------
def test_start_time_scales_with_weight_bytes(launcher: Launcher, tmp_path: Path) -> None:
    env = {"MS4FLEET_SIM_LOAD_BYTES_PER_S": "1e12", "MS4FLEET_SIM_START_OVERHEAD_S": "0.2"}
    took = []
    for size in (50_000_000_000, 100_000_000_000):
        standin = launcher.start(ms4_model(tmp_path / f"m{size}", size), "--max-model-len", "8192", **env)
        took.append(
            float(
                re.search(
                    r"Loading weights took ([\d.]+) seconds",  # type: ignore[union-attr]
                    standin.output(),
                ).group(1)
            )
        )
        standin.stop()
    assert took == [0.25, 0.3], "overhead + bytes / bandwidth"


def test_refuses_when_gpu_lacks_free_memory(launcher: Launcher, tmp_path: Path) -> None:
    busy = gpus(2)
    busy[1]["memory_free_bytes"] = 100 * GIB
    status, output = launcher.run(ms4_model(tmp_path / "model"), *MS4_FLAGS, gpu_list=busy)
    requested = math.ceil(H200_TOTAL * 0.92)
    expected = (
        f"ValueError: Free memory on device cuda:1 ({format_gib(100 * GIB)}/{format_gib(H200_TOTAL)} GiB) on "
        f"startup is less than desired GPU memory utilization (0.92, {format_gib(requested)} GiB). Decrease GPU "
        "memory utilization or reduce GPU memory used by other processes."
    )
    assert status == 1
    assert expected in output
    assert (
        "Free memory on device cuda:1 (100.0/140.4 GiB) on startup is less than desired GPU memory "
        "utilization (0.92, 129.17 GiB)" in output
    )


def test_lower_utilization_fits_the_same_gpu(launcher: Launcher, tmp_path: Path) -> None:
    busy = gpus(2, free=100 * GIB)
    standin = launcher.start(
        ms4_model(tmp_path / "model"), *MS4_FLAGS, "--gpu-memory-utilization", "0.6", gpu_list=busy
    )
    assert httpx.get(f"{standin.url}/health").status_code == 200


def test_refuses_when_max_model_len_does_not_fit(launcher: Launcher, tmp_path: Path) -> None:
    flags = [*MS4_FLAGS, "--max-model-len", "1048576", "--kv-cache-memory-bytes", str(4 * GIB)]
    status, output = launcher.run(ms4_model(tmp_path / "model"), *flags)
    assert status == 1
    needed = 1048576 * MS4_BYTES_PER_TOKEN
    estimated = (4 * GIB // (16 * MS4_BYTES_PER_TOKEN)) * 16
    assert (
        f"ValueError: To serve at least one request with the model's max seq len (1048576), "
        f"({format_gib(needed)} GiB KV cache is needed, which is larger than the available KV cache memory "
        f"(4.0 GiB). Based on the available memory, the estimated maximum model length is {estimated}. "
    ) in output


def test_max_model_len_beyond_the_model(launcher: Launcher, tmp_path: Path) -> None:
    model = gqa_model(tmp_path / "model")
    status, output = launcher.run(model, "--max-model-len", "200000")
    assert status == 1
    assert (
        "ValueError: User-specified max_model_len (200000) is greater than the derived max_model_len "
        "(max_position_embeddings=131072 or model_max_length=None in model's config.json)."
    ) in output
    allowed = launcher.start(model, "--max-model-len", "200000", VLLM_ALLOW_LONG_MAX_MODEL_LEN="1")
    assert httpx.get(f"{allowed.url}/v1/models").json()["data"][0]["max_model_len"] == 200000


def test_no_room_for_kv_cache(launcher: Launcher, tmp_path: Path) -> None:
    status, output = launcher.run(
        ms4_model(tmp_path / "model"), "--max-model-len", "8192", "--gpu-memory-utilization", "0.5"
    )
    assert status == 1
    assert "ValueError: No available memory for the cache blocks." in output


def test_fp8_kv_cache_doubles_tokens(launcher: Launcher, tmp_path: Path) -> None:
    model = ms4_model(tmp_path / "model")
    counts = []
    for dtype in ("auto", "fp8"):
        standin = launcher.start(model, *MS4_FLAGS, "--kv-cache-dtype", dtype, "--kv-cache-memory-bytes", str(10 * GIB))
        counts.append(
            int(
                re.search(
                    r"GPU KV cache size: ([\d,]+) tokens",  # type: ignore[union-attr]
                    standin.output(),
                )
                .group(1)
                .replace(",", "")
            )
        )
        standin.stop()
    assert counts == [10 * GIB // (16 * MS4_BYTES_PER_TOKEN) * 16, 10 * GIB // (16 * MS4_BYTES_PER_TOKEN // 2) * 16]


def test_more_ranks_than_gpus(launcher: Launcher, tmp_path: Path) -> None:
    status, output = launcher.run(ms4_model(tmp_path / "model"), *MS4_FLAGS, gpu_list=gpus(1))
    assert status == 1
    assert "ValueError: World size (2) is larger than the number of available GPUs (1) in this node." in output


def test_no_gpu_at_all(launcher: Launcher, tmp_path: Path) -> None:
    status, output = launcher.run(ms4_model(tmp_path / "model"), gpu_list=[])
    assert status == 1
    assert "RuntimeError: Failed to infer device type" in output


def test_model_resolution(launcher: Launcher, tmp_path: Path) -> None:
    snapshot = tmp_path / "hf-home" / "hub" / "models--mistralai--Mistral-Small-4-119B-2603"
    ms4_model(snapshot / "snapshots" / "abc123", 1_000_000_000)
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text("abc123")
    standin = launcher.start("mistralai/Mistral-Small-4-119B-2603", *MS4_FLAGS)
    assert httpx.get(f"{standin.url}/v1/models").json()["data"][0]["root"] == "mistralai/Mistral-Small-4-119B-2603"
    standin.stop()
    status, output = launcher.run("mistralai/Nope", "--max-model-len", "8192")
    assert status == 1
    assert "ValueError: Invalid repository ID or local directory specified: 'mistralai/Nope'." in output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    status, output = launcher.run(empty)
    assert status == 1
    assert f"RuntimeError: Cannot find any model weights with `{empty}`" in output


def test_busy_port(launcher: Launcher, tmp_path: Path) -> None:
    first = launcher.start(ms4_model(tmp_path / "model"), *MS4_FLAGS)
    # The last --port wins, as in argparse: the second stand-in asks for the first one's port.
    status, output = launcher.run(tmp_path / "model", *MS4_FLAGS, "--port", str(first.port))
    assert status == 1
    assert (
        f"OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', {first.port}): "
        "address already in use" in output
    )


def test_sigterm_exits_cleanly(launcher: Launcher, tmp_path: Path) -> None:
    standin = launcher.start(ms4_model(tmp_path / "model"), *MS4_FLAGS)
    standin.proc.send_signal(signal.SIGTERM)
    assert standin.wait_exit() == 0
    assert "Shutting down" in standin.output()


def _chat_in_thread(url: str, results: list[httpx.Response | Exception]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(chat(url))
        except httpx.HTTPError as error:
            results.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_running(standin: Standin, count: int) -> None:
    deadline = time.monotonic() + 10
    while metric(httpx.get(f"{standin.url}/metrics").text, "vllm:num_requests_running") != count:
        assert time.monotonic() < deadline, f"never {count} request(s) running"
        time.sleep(0.05)


def test_sigterm_with_shutdown_timeout_drains_in_flight_requests(launcher: Launcher, tmp_path: Path) -> None:
    # 150 ms a token: the ~20-token reply takes seconds, so the request is in flight when SIGTERM arrives.
    standin = launcher.start(
        ms4_model(tmp_path / "model"), *MS4_FLAGS, "--shutdown-timeout", "30", faults={"decode_delay_ms": 150}
    )
    results: list[httpx.Response | Exception] = []
    thread = _chat_in_thread(standin.url, results)
    _wait_running(standin, 1)
    standin.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # Draining: a new connection is refused while the request in flight goes on.
    with pytest.raises(httpx.ConnectError):
        chat(standin.url)
    assert standin.proc.poll() is None
    thread.join(timeout=30)
    (response,) = results
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 200
    assert response.json()["choices"][0]["finish_reason"] == "stop"
    assert standin.wait_exit() == 0
    assert "mode=drain timeout=30s" in standin.output()


def test_sigterm_drain_ends_at_the_shutdown_timeout(launcher: Launcher, tmp_path: Path) -> None:
    # 2 s a token: the request outlives a 1 s drain, which then ends and aborts it.
    standin = launcher.start(
        ms4_model(tmp_path / "model"), *MS4_FLAGS, "--shutdown-timeout", "1", faults={"decode_delay_ms": 2000}
    )
    results: list[httpx.Response | Exception] = []
    thread = _chat_in_thread(standin.url, results)
    _wait_running(standin, 1)
    started = time.monotonic()
    standin.proc.send_signal(signal.SIGTERM)
    assert standin.wait_exit() == 0
    assert time.monotonic() - started < 8
    thread.join(timeout=30)
    assert isinstance(results[0], httpx.HTTPError)
    assert "aborting in-flight requests count=1" in standin.output()


def test_sigterm_without_shutdown_timeout_aborts_in_flight_requests(launcher: Launcher, tmp_path: Path) -> None:
    # vLLM's default (--shutdown-timeout 0): the request in flight is cut, as ms4fleet's units avoid.
    standin = launcher.start(ms4_model(tmp_path / "model"), *MS4_FLAGS, faults={"decode_delay_ms": 150})
    results: list[httpx.Response | Exception] = []
    thread = _chat_in_thread(standin.url, results)
    _wait_running(standin, 1)
    standin.proc.send_signal(signal.SIGTERM)
    assert standin.wait_exit() == 0
    thread.join(timeout=30)
    assert isinstance(results[0], httpx.HTTPError)


def test_unknown_flag_exits_2(launcher: Launcher, tmp_path: Path) -> None:
    status, output = launcher.run(ms4_model(tmp_path / "model"), "--no-such-flag", "1")
    assert status == 2
    assert output.endswith("vllm: error: unrecognized arguments: --no-such-flag 1\n")


# -- native runs register their memory ---------------------------------------------------------------
NATIVE_WRAPPER = """
import sys
from pathlib import Path
from ms4fleet_sim.nvsim import state
root = Path(sys.argv.pop(1))
state.PROFILE, state.FAULTS = root / "profile.json", root / "faults.json"
state.RUN_DIR, state.PROCS_DIR = root / "run", root / "run" / "procs"
from ms4fleet_sim.standin.__main__ import main
sys.exit(main())
"""


def test_native_run_registers_memory_and_trips_a_second_one(launcher: Launcher, tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    (sim / "run" / "procs").mkdir(parents=True)
    profile = {
        "name": "NVIDIA H200",
        "memory_total_bytes": H200_TOTAL,
        "memory_reserved_bytes": 644939776,
        "gpus": [{"index": 0, "uuid": "GPU-a"}, {"index": 1, "uuid": "GPU-b"}],
    }
    (sim / "profile.json").write_text(json.dumps(profile))
    model = ms4_model(tmp_path / "model")
    native = {
        "prefix": ("-c", NATIVE_WRAPPER, str(sim)),
        "gpu_list": None,
        "CUDA_VISIBLE_DEVICES": "1",
        "MS4FLEET_SIM_RUN_DIR": str(sim / "run"),
        "MS4FLEET_SIM_GPUS_FILE": str(sim / "absent.json"),
    }
    flags = ("--max-model-len", "65536")
    first = launcher.start(model, *flags, **native)  # type: ignore[arg-type]
    entry = json.loads((sim / "run" / "procs" / f"native-{first.proc.pid}.json").read_text())
    assert entry == {
        "pid": first.proc.pid,
        "name": "vllm",
        "container_id": None,
        "gpu_memory_bytes": {"1": math.ceil(H200_TOTAL * 0.92)},
    }
    status, output = launcher.run(model, *flags, **native)  # type: ignore[arg-type]
    free = H200_TOTAL - 644939776 - math.ceil(H200_TOTAL * 0.92)
    assert status == 1
    assert f"Free memory on device cuda:0 ({format_gib(free)}/140.4 GiB) on startup" in output
    first.stop()
    assert list((sim / "run" / "procs").iterdir()) == []


# -- what ms4fleet's endpoint verification sees --------------------------------------------------------
def test_verify_passes_a_healthy_standin(ms4: Standin) -> None:
    from ms4fleet.verify import CHECKS, verify

    # Not auth: the stand-in, like vLLM, answers /invocations without a key (tests/sim/test_standin_routes.py).
    served = [name for name in CHECKS if name != "auth"]
    report = verify(ms4.url, "mistral-small-4", checks=served, timeout_s=30)
    assert [(c.name, c.status) for c in report.checks if c.name != "auth"] == [(name, "pass") for name in served]


def test_memory_refusal_is_named_by_causes(launcher: Launcher, tmp_path: Path) -> None:
    from ms4fleet.causes import name_causes

    status, output = launcher.run(ms4_model(tmp_path / "model"), *MS4_FLAGS, gpu_list=gpus(2, free=50 * GIB))
    assert status == 1
    assert "start-gate" in [c.id for c in name_causes(output)]


def test_the_planners_argv_serves_and_verifies(launcher: Launcher, tmp_path: Path) -> None:
    """What ms4fleet.serving renders for an 8x H200 host starts the stand-in and passes every check."""
    from ms4fleet.config import HostConfig
    from ms4fleet.serving import plan_host
    from ms4fleet.verify import CHECKS, verify

    config = HostConfig.from_host_data("gpu-1", {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 8}})
    argv = list(plan_host(config).replicas[0].argv)
    # Serve on loopback: drop the replica's own address (the launcher adds a free loopback port).
    for flag in ("--host", "--port"):
        if flag in argv:
            del argv[argv.index(flag) : argv.index(flag) + 2]
    model, flags = argv[0], argv[1:]
    assert model.startswith("/"), "the unit serves a mounted weights directory"
    standin = launcher.start(ms4_model(tmp_path / "model"), *flags)
    served = config.serving.served_model_name or config.profile.served_model_name
    report = verify(standin.url, served, checks=set(CHECKS) - {"auth"}, timeout_s=30)
    assert report.ok, report.to_dict()
