"""A scriptable OpenAI/vLLM look-alike on loopback: healthy by default, each route replaceable per test.

``running_fake()`` starts one on a free port and stops it on exit (the ``fake`` fixture uses it).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ms4fleet.catalog import vllm_routes

MODEL = "mistral-small-4"
CREATED = 1764720000  # vLLM stamps every answer; the openai SDK requires it
CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL}
METRICS = (
    "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
    "# TYPE vllm:num_requests_running gauge\n"
    f'vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 0.0\n'
    f'vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 0.0\n'
    f'vllm:kv_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 0.25\n'
)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str -> text; list[str] -> SSE "data:" lines, flushed one by one
    content_type: str | None = None


Route = Callable[[dict[str, Any]], Reply]


def completion(content: str = "Hello there.", tokens: int = 3, finish: str | None = "stop", **message: Any) -> Reply:
    return Reply(
        body={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content, **message}, "finish_reason": finish}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens},
        }
    )


def tool_call(name: str = "get_weather", arguments: str = '{"city": "Paris", "unit": "celsius"}') -> Reply:
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
    return completion(content="", tokens=12, finish="tool_calls", tool_calls=[call])


def sse(*deltas: dict[str, Any], done: bool = True, usage_tokens: int | None = None) -> Reply:
    lines = [
        json.dumps({**CHUNK, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}) for delta in deltas
    ]
    if usage_tokens is not None:
        usage = {"prompt_tokens": 5, "completion_tokens": usage_tokens, "total_tokens": 5 + usage_tokens}
        lines.append(json.dumps({**CHUNK, "choices": [], "usage": usage}))
    if done:
        lines.append("[DONE]")
    return Reply(body=lines)


def default_chat(request: dict[str, Any]) -> Reply:
    if request.get("stream"):
        return sse({"role": "assistant"}, {"content": "One,"}, {"content": " two."}, usage_tokens=2)
    if request.get("tools"):
        return tool_call()
    effort = request.get("reasoning_effort")
    if effort == "high":
        return completion(reasoning="17 * 23 = 391")
    return completion()


@dataclass
class FakeVllm:
    url: str = ""
    api_key: str | None = None
    # Paths the key guards: vLLM's own prefixes by default.
    guarded: tuple[str, ...] = ("/v1", "/v2", "/inference", "/cohere")
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    listener: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.routes.update(
            {
                ("GET", "/health"): lambda _: Reply(body=""),
                ("GET", "/v1/models"): lambda _: Reply(body={"object": "list", "data": [{"id": MODEL}]}),
                ("POST", "/v1/chat/completions"): default_chat,
                ("GET", "/metrics"): lambda _: Reply(body=METRICS, content_type="text/plain; version=0.0.4"),
            }
        )

    def stop_listening(self) -> None:
        """Close the port, as vLLM's API server does after its engine died. Called from a route: handlers
        run on their own threads, so waiting for the accept loop to end cannot deadlock."""
        if self.listener is not None:
            self.listener.shutdown()
            self.listener.server_close()

    def serve_unguarded_routes(self) -> None:
        """Answer every route of vLLM's app outside its key check (/invocations, /tokenize, /docs, ...) as
        vLLM 0.32 itself does: 200, or 400 for the empty probe of a route that validates its body."""
        for route in vllm_routes().routes:
            if route.path.startswith(vllm_routes().guarded_prefixes) or route.path == "/health":
                continue
            for method in route.methods or ("GET", "POST"):
                status = 400 if method == "POST" and route.path not in ("/ping", "/is_scaling_elastic_ep") else 200
                self.routes.setdefault((method, route.path), lambda _, status=status: Reply(status, {}))

    def route(self, method: str, path: str, route: Route) -> None:
        self.routes[(method, path)] = route

    def chat_route(self, kind: str, route: Route) -> None:
        """Replace the chat answer for one kind of request: plain, tools, reasoning, stream or image."""

        def dispatch(request: dict[str, Any]) -> Reply:
            return route(request) if _chat_kind(request) == kind else default_chat(request)

        self.routes[("POST", "/v1/chat/completions")] = dispatch


def _chat_kind(request: dict[str, Any]) -> str:
    if request.get("stream"):
        return "stream"
    if request.get("tools"):
        return "tools"
    if request.get("reasoning_effort"):
        return "reasoning"
    content = request["messages"][0]["content"]
    return "image" if isinstance(content, list) else "plain"


def _handler(fake: FakeVllm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            return

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length)) if length else {}
            fake.requests.append((method, self.path, request))
            if (
                fake.api_key
                and self.path.startswith(fake.guarded)
                and self.headers.get("Authorization") != f"Bearer {fake.api_key}"
            ):
                self._send(Reply(401, {"error": "Unauthorized"}))
                return
            route = fake.routes.get((method, self.path))
            self._send(route(request) if route else Reply(404, {"detail": "Not Found"}))

        def _send(self, reply: Reply) -> None:
            if isinstance(reply.body, list):
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for line in reply.body:
                    self.wfile.write(f"data: {line}\n\n".encode())
                    self.wfile.flush()
                self.close_connection = True
                return
            if isinstance(reply.body, dict):
                payload, kind = json.dumps(reply.body).encode(), "application/json"
            else:
                payload, kind = str(reply.body or "").encode(), "text/plain"
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type or kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler


@contextlib.contextmanager
def running_fake() -> Iterator[FakeVllm]:
    server_state = FakeVllm()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server_state))
    server.daemon_threads = True
    server_state.url = f"http://127.0.0.1:{server.server_address[1]}"
    server_state.listener = server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
