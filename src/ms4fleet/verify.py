"""Endpoint verification: does a vLLM OpenAI endpoint really serve, not just answer /health?

+ ``verify(url, model, ...)``: run the checks in order (health, models, auth, completion, tools, reasoning,
  streaming, sdk, image, metrics) and return a ``VerifyReport`` with pass/fail/skip, latency and TTFT per
  check, and the named causes when a log is given (or an error body names one).
+ ``checks_for_profile(profile)``: the checks a catalog model can pass (image only when multimodal,
  reasoning only when it has reasoning efforts).

Exit codes (``VerifyReport.exit_code``): 0 every selected check passed, 1 a check failed (also when the
server answered and then went away: a crash a check provoked), 2 the endpoint never answered. A /health
200 proves little (vLLM answers it, then dies on the first decode), so the completion check requires
generated tokens and a finish reason. The raw-HTTP checks say what the server answered; the ``sdk`` check
asks the same through the official ``openai`` client (chat, stream, tool call, its response types checked
strictly), which is what users run.

The ``auth`` check asks every route of vLLM's app (``catalog/vllm_routes.json``) but /v1/* and /health
without the key: each must answer 401 or 404 (vLLM's own key check guards only /v1, /v2, /inference and
/cohere; /invocations, /tokenize, /docs, ... reach the model or its metadata without it), and a chat
completion without the key must be 401. An endpoint meant to be open (``serving.open_endpoint``) skips it.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import jsonschema  # type: ignore[import-untyped]

from ms4fleet import metrics
from ms4fleet.catalog import ModelProfile, vllm_routes
from ms4fleet.causes import Cause, name_causes

Status = Literal["pass", "fail", "skip"]
CHECKS: tuple[str, ...] = (
    "health",
    "models",
    "auth",
    "completion",
    "tools",
    "reasoning",
    "streaming",
    "sdk",
    "image",
    "metrics",
)
EXIT_PASS, EXIT_FAIL, EXIT_UNREACHABLE = 0, 1, 2

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        # OpenAI strict mode: vLLM (0.32) pins the argument schema in structured decoding only for strict
        # tools; without it a forced call may carry any JSON as arguments.
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                # Enums keep a forced call short and valid even from a model that knows no cities.
                "city": {"type": "string", "enum": ["Paris", "Berlin", "Tokyo"]},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


class Unreachable(Exception):
    """The endpoint did not accept a connection (or timed out)."""


@dataclass
class CheckResult:
    name: str
    status: Status
    detail: str
    latency_s: float | None = None
    ttft_s: float | None = None
    # Text the server returned with a failure (error bodies often name the cause).
    body: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
            "ttft_s": None if self.ttft_s is None else round(self.ttft_s, 4),
        }


@dataclass
class VerifyReport:
    url: str
    model: str
    checks: list[CheckResult]
    unreachable: bool = False
    causes: list[Cause] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unreachable and all(check.status != "fail" for check in self.checks)

    @property
    def exit_code(self) -> int:
        if self.unreachable:
            return EXIT_UNREACHABLE
        return EXIT_PASS if self.ok else EXIT_FAIL

    def check(self, name: str) -> CheckResult:
        return next(check for check in self.checks if check.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "unreachable": self.unreachable,
            "checks": [check.to_dict() for check in self.checks],
            "causes": [cause.to_dict() for cause in self.causes],
        }


def checks_for_profile(profile: ModelProfile) -> frozenset[str]:
    """The checks a model of this catalog profile can pass when served correctly."""
    # auth is the endpoint's, not the model's: selected on its own (``--checks auth``).
    selected = set(CHECKS) - {"auth"}
    if not profile.multimodal:
        selected.discard("image")
    if not {"none", "high"} <= set(profile.reasoning_efforts):
        selected.discard("reasoning")
    return frozenset(selected)


# ``auth`` is not a default yet: vLLM itself leaves /invocations and the rest open, so it passes only behind
# a proxy that serves /v1/ and /health alone (issue #17); ``--checks`` or a gate's checks select it.
DEFAULT_CHECKS = frozenset(CHECKS) - {"image", "auth"}
# What the auth check accepts from a route asked without the key: refused, or not served at all.
LOCKED_STATUSES = frozenset({401, 404})
# Seconds allowed per request of a check (a cold replica's first completion can take a while).
DEFAULT_TIMEOUT_S = 120.0


@dataclass
class _Context:
    client: httpx.Client
    url: str
    model: str
    max_tokens: int
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    open_endpoint: bool = False


def verify(
    url: str,
    model: str,
    *,
    api_key: str | None = None,
    checks: Iterable[str] = DEFAULT_CHECKS,
    logs: str | Callable[[], str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_tokens: int = 16,
    open_endpoint: bool = False,
) -> VerifyReport:
    """Run the selected checks against ``url`` (e.g. ``http://10.0.0.5:8000``) serving ``model``.

    ``logs``: the service's journal or container log, or a callable reading it (called only after a
    failure, so it sees what the failing request made the service print); it is scanned for known failure
    signatures (``ms4fleet.causes``). Error bodies returned by the server are scanned too.
    ``open_endpoint``: the endpoint is meant to answer without a key (``serving.open_endpoint``): the auth
    check is skipped and says so.
    """
    selected = set(checks)
    unknown = selected - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)}: choose from {', '.join(CHECKS)}")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base = url.rstrip("/")
    results: list[CheckResult] = []
    unreachable = False  # never answered: exit 2
    answered = False
    stopped: str | None = None  # answered, then stopped answering (a crash the checks provoked): exit 1
    with httpx.Client(headers=headers, timeout=timeout_s) as client:
        context = _Context(client, base, model, max_tokens, api_key, timeout_s, open_endpoint)
        for name in CHECKS:
            if name not in selected:
                results.append(CheckResult(name, "skip", "not selected"))
                continue
            if unreachable or stopped:
                results.append(CheckResult(name, "skip", stopped or "endpoint unreachable"))
                continue
            started = time.perf_counter()
            try:
                result = _RUNNERS[name](context)
                answered = True
            except Unreachable as exc:
                if answered:
                    stopped = f"the server stopped answering during the {name!r} check"
                    result = CheckResult(name, "fail", f"{stopped}: {exc}")
                else:
                    unreachable = True
                    result = CheckResult(name, "fail", f"unreachable: {exc}")
            except httpx.HTTPError as exc:
                answered = True
                result = CheckResult(name, "fail", f"{type(exc).__name__}: {exc}")
            if result.latency_s is None:
                result.latency_s = time.perf_counter() - started
            results.append(result)
    report = VerifyReport(base, model, results, unreachable=unreachable)
    if not report.ok:
        evidence = "\n".join(check.body for check in results if check.body)
        log_text = logs() if callable(logs) else logs
        report.causes = name_causes("\n".join(part for part in (log_text, evidence) if part))
    return report


# ------------------------------------------------------------------------------------------- checks


def _request(context: _Context, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return context.client.request(method, context.url + path, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise Unreachable(f"{context.url}{path}: {exc}") from exc


def _failed_response(name: str, what: str, response: httpx.Response) -> CheckResult:
    body = response.text
    return CheckResult(name, "fail", f"{what}: HTTP {response.status_code}: {_short(body)}", body=body)


def _short(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def check_health(context: _Context) -> CheckResult:
    response = _request(context, "GET", "/health")
    if response.status_code != 200:
        return _failed_response("health", "GET /health", response)
    return CheckResult("health", "pass", "GET /health 200")


def check_models(context: _Context) -> CheckResult:
    response = _request(context, "GET", "/v1/models")
    if response.status_code != 200:
        return _failed_response("models", "GET /v1/models", response)
    data = _json(response)
    served = [str(item.get("id")) for item in (data or {}).get("data", []) if isinstance(item, dict)]
    if context.model not in served:
        return CheckResult(
            "models", "fail", f"/v1/models lists {served or 'nothing'}, not {context.model!r}", body=response.text
        )
    return CheckResult("models", "pass", f"serves {context.model!r}")


def auth_probes() -> list[tuple[str, str]]:
    """``(method, path)`` the auth check asks without the key: every route of vLLM's app but /v1/* and
    /health, once per path (GET where the route takes it, else its first method; a path parameter filled)."""
    probes: dict[str, str] = {}
    for route in vllm_routes().routes:
        if route.path == "/health" or route.path.startswith("/v1/"):
            continue
        methods = route.methods or ("GET",)
        method = "GET" if "GET" in methods else methods[0]
        probes.setdefault(route.path.replace("{", "ms4fleet-").replace("}", ""), method)
    return [(method, path) for path, method in probes.items()]


def check_auth(context: _Context) -> CheckResult:
    if context.open_endpoint:
        return CheckResult("auth", "skip", "the endpoint is open by configuration (serving.open_endpoint)")
    opened = []
    # A client of its own, without the key the context's client sends.
    with httpx.Client(timeout=context.client.timeout) as bare:
        for method, path in auth_probes():
            # An empty JSON object: a valid request reaches no model, an invalid one answers 400, not 401.
            try:
                response = bare.request(method, context.url + path, json={} if method == "POST" else None)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise Unreachable(f"{context.url}{path}: {exc}") from exc
            if response.status_code not in LOCKED_STATUSES:
                opened.append(f"{method} {path} {response.status_code}")
        chat = bare.post(
            context.url + "/v1/chat/completions",
            json={"model": context.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        )
    if chat.status_code != 401:
        opened.insert(0, f"POST /v1/chat/completions {chat.status_code}")
    if opened:
        return CheckResult(
            "auth", "fail", f"{len(opened)} route(s) answer without the API key (want 401/404): {', '.join(opened)}"
        )
    return CheckResult(
        "auth", "pass", f"POST /v1/chat/completions 401 and {len(auth_probes())} other routes 401/404 without the key"
    )


def _chat(context: _Context, payload: Mapping[str, Any]) -> httpx.Response:
    body = {"model": context.model, **payload}
    return _request(context, "POST", "/v1/chat/completions", json=body)


def check_completion(context: _Context) -> CheckResult:
    response = _chat(
        context,
        {
            "messages": [{"role": "user", "content": "Reply with one short sentence."}],
            "max_tokens": context.max_tokens,
            "temperature": 0,
        },
    )
    if response.status_code != 200:
        return _failed_response("completion", "chat completion", response)
    data = _json(response) or {}
    choices = data.get("choices") or []
    if not choices:
        return CheckResult("completion", "fail", "200 without choices", body=response.text)
    message = choices[0].get("message") or {}
    content = message.get("content") or ""
    tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
    finish = choices[0].get("finish_reason")
    if not content and tokens == 0:
        return CheckResult(
            "completion", "fail", "no content and no completion tokens: nothing decoded", body=response.text
        )
    if finish not in ("stop", "length"):
        return CheckResult("completion", "fail", f"finish_reason {finish!r}", body=response.text)
    return CheckResult(
        "completion", "pass", f"{tokens} tokens, finish_reason {finish}, content {_short(content, 60)!r}"
    )


def check_tools(context: _Context) -> CheckResult:
    response = _chat(
        context,
        {
            "messages": [{"role": "user", "content": "What is the weather in Paris? Use the tool."}],
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "max_tokens": 128,
            "temperature": 0,
        },
    )
    if response.status_code != 200:
        return _failed_response("tools", "tool-call request", response)
    data = _json(response) or {}
    message = ((data.get("choices") or [{}])[0]).get("message") or {}
    calls = message.get("tool_calls") or []
    if not calls:
        return CheckResult("tools", "fail", "no tool_calls in the answer", body=response.text)
    for call in calls:
        called = call.get("function") or {}
        problem = _tool_call_problem(called.get("name"), called.get("arguments"))
        if problem:
            return CheckResult("tools", "fail", problem, body=response.text)
    return CheckResult("tools", "pass", f"{len(calls)} valid call(s): {_short(json.dumps(calls[0]['function']), 120)}")


def _tool_call_problem(name: object, arguments: object) -> str | None:
    """What is wrong with one call of the weather tool (its name, its arguments against the schema), or None."""
    function = WEATHER_TOOL["function"]
    if name != function["name"]:
        return f"called unknown tool {name!r}"
    try:
        jsonschema.validate(json.loads(str(arguments or "")), function["parameters"])
    except ValueError as exc:
        return f"arguments are not JSON: {exc}"
    except jsonschema.ValidationError as exc:
        return f"arguments break the tool schema: {exc.message}"
    return None


def _reasoning_text(message: Mapping[str, Any]) -> str:
    # vLLM renamed the field from reasoning_content to reasoning (PR #33402); accept both.
    return str(message.get("reasoning") or message.get("reasoning_content") or "")


def check_reasoning(context: _Context) -> CheckResult:
    texts: dict[str, str] = {}
    for effort in ("high", "none"):
        response = _chat(
            context,
            {
                "messages": [{"role": "user", "content": "What is 17 * 23? Think first."}],
                "reasoning_effort": effort,
                "max_tokens": 512,
                "temperature": 0,
            },
        )
        if response.status_code != 200:
            return _failed_response("reasoning", f"reasoning_effort {effort!r}", response)
        message = (((_json(response) or {}).get("choices") or [{}])[0]).get("message") or {}
        texts[effort] = _reasoning_text(message)
    if not texts["high"]:
        return CheckResult(
            "reasoning", "fail", "reasoning_effort 'high' returned no reasoning (is --reasoning-parser set?)"
        )
    if texts["none"]:
        return CheckResult("reasoning", "fail", "reasoning_effort 'none' still returned reasoning")
    return CheckResult("reasoning", "pass", f"'high' reasoned ({len(texts['high'])} chars), 'none' did not")


def check_streaming(context: _Context) -> CheckResult:
    payload = {
        "model": context.model,
        "messages": [{"role": "user", "content": "Count from one to five."}],
        "max_tokens": context.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    ttft: float | None = None
    chunks = 0
    tokens = 0
    done = False
    try:
        with context.client.stream("POST", context.url + "/v1/chat/completions", json=payload) as response:
            if response.status_code != 200:
                response.read()
                return _failed_response("streaming", "streaming request", response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if event.get("error"):
                    return CheckResult("streaming", "fail", f"error event: {_short(data)}", body=data)
                tokens = int((event.get("usage") or {}).get("completion_tokens") or tokens)
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content") or _reasoning_text(delta) or delta.get("tool_calls"):
                        chunks += 1
                        if ttft is None:
                            ttft = time.perf_counter() - started
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise Unreachable(str(exc)) from exc
    total = time.perf_counter() - started
    if not done:
        return CheckResult("streaming", "fail", "stream ended without [DONE]", total, ttft)
    if chunks == 0 and tokens == 0:
        return CheckResult("streaming", "fail", "stream carried no tokens", total, ttft)
    return CheckResult("streaming", "pass", f"{chunks} content chunks, {tokens} tokens", total, ttft)


def check_sdk(context: _Context) -> CheckResult:
    """A chat completion, a stream and a tool call through the official ``openai`` client, with the client's
    strict response validation: an answer the raw checks accept but the SDK cannot read fails here."""
    import openai  # a third of a second to import: only this check needs it

    client = openai.OpenAI(
        base_url=context.url + "/v1",
        # The SDK insists on a key; vLLM without --api-key ignores whatever is sent.
        api_key=context.api_key or "no-key",
        timeout=context.timeout_s,
        max_retries=0,
        _strict_response_validation=True,
    )
    steps = ("chat completion", "stream", "tool call")
    step = steps[0]
    try:
        with client:
            chat = client.chat.completions.create(
                model=context.model,
                messages=[{"role": "user", "content": "Reply with one short sentence."}],
                max_tokens=context.max_tokens,
                temperature=0,
            )
            choice = chat.choices[0] if chat.choices else None
            tokens = chat.usage.completion_tokens if chat.usage else 0
            if choice is None or (not choice.message.content and not tokens):
                return CheckResult("sdk", "fail", f"{step}: nothing decoded")
            if choice.finish_reason not in ("stop", "length"):
                return CheckResult("sdk", "fail", f"{step}: finish_reason {choice.finish_reason!r}")
            step = steps[1]
            chunks, streamed = 0, 0
            stream = client.chat.completions.create(
                model=context.model,
                messages=[{"role": "user", "content": "Count from one to five."}],
                max_tokens=context.max_tokens,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            with stream:
                for chunk in stream:
                    chunks += sum(1 for c in chunk.choices if c.delta.content)
                    streamed = chunk.usage.completion_tokens if chunk.usage else streamed
            if not chunks and not streamed:
                return CheckResult("sdk", "fail", f"{step}: no content chunks and no usage")
            step = steps[2]
            tooled = client.chat.completions.create(  # type: ignore[call-overload]  # WEATHER_TOOL: a plain dict
                model=context.model,
                messages=[{"role": "user", "content": "What is the weather in Paris? Use the tool."}],
                tools=[WEATHER_TOOL],
                tool_choice="required",
                parallel_tool_calls=False,
                max_tokens=128,
                temperature=0,
            )
            calls = (tooled.choices[0].message.tool_calls or []) if tooled.choices else []
            functions = [call.function for call in calls if call.type == "function"]
            if not functions:
                return CheckResult("sdk", "fail", f"{step}: no function call in the answer")
            for function in functions:
                problem = _tool_call_problem(function.name, function.arguments)
                if problem:
                    return CheckResult("sdk", "fail", f"{step}: {problem}")
    except openai.APIConnectionError as exc:
        raise Unreachable(f"{step} through the openai SDK: {exc}") from exc
    except openai.APIStatusError as exc:
        body = exc.response.text
        return CheckResult("sdk", "fail", f"{step}: HTTP {exc.status_code}: {_short(body)}", body=body)
    except openai.APIResponseValidationError as exc:
        # The SDK's own message is generic; the pydantic error it wraps names the fields.
        why = _short(str(exc.__cause__ or exc), 400)
        return CheckResult("sdk", "fail", f"{step}: the openai SDK rejected the answer: {why}", body=exc.response.text)
    return CheckResult(
        "sdk",
        "pass",
        f"openai {openai.__version__}: chat {tokens} tokens, stream {chunks} chunks, tool call "
        f"{functions[0].name}({_short(functions[0].arguments, 80)})",
    )


def _png(width: int = 64, height: int = 64) -> bytes:
    """A small RGB gradient PNG, built with the standard library (vision encoders reject 1x1 images)."""
    rows = b"".join(
        b"\x00" + bytes(channel for x in range(width) for channel in (x * 4 % 256, y * 4 % 256, 128))
        for y in range(height)
    )

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def check_image(context: _Context) -> CheckResult:
    image = "data:image/png;base64," + base64.b64encode(_png()).decode()
    response = _chat(
        context,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe this image in five words."},
                        {"type": "image_url", "image_url": {"url": image}},
                    ],
                }
            ],
            "max_tokens": context.max_tokens,
            "temperature": 0,
        },
    )
    if response.status_code != 200:
        return _failed_response("image", "image request", response)
    data = _json(response) or {}
    message = ((data.get("choices") or [{}])[0]).get("message") or {}
    tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
    if not message.get("content") and tokens == 0:
        return CheckResult("image", "fail", "image request decoded nothing", body=response.text)
    return CheckResult("image", "pass", f"{tokens} tokens about a 64x64 image")


def check_metrics(context: _Context) -> CheckResult:
    response = _request(context, "GET", "/metrics")
    if response.status_code != 200:
        return _failed_response("metrics", "GET /metrics", response)
    try:
        samples = metrics.parse(response.text)
    except metrics.MetricsError as exc:
        return CheckResult("metrics", "fail", f"/metrics: {exc}", body=response.text)
    kv = next((name for name in metrics.KV_USAGE_NAMES if metrics.total(samples, name) is not None), None)
    running = metrics.total(samples, metrics.RUNNING)
    if kv is None or running is None:
        wanted = ((metrics.RUNNING, running is not None), (metrics.KV_USAGE, kv))
        missing = [name for name, found in wanted if not found]
        return CheckResult("metrics", "fail", f"/metrics lacks {', '.join(missing)}: not a vLLM server?")
    return CheckResult("metrics", "pass", f"{metrics.RUNNING}={running:g}, {kv}={metrics.total(samples, kv):g}")


_RUNNERS: dict[str, Callable[[_Context], CheckResult]] = {
    "health": check_health,
    "models": check_models,
    "auth": check_auth,
    "completion": check_completion,
    "tools": check_tools,
    "reasoning": check_reasoning,
    "streaming": check_streaming,
    "sdk": check_sdk,
    "image": check_image,
    "metrics": check_metrics,
}
