"""The OpenAI-compatible HTTP front end, shaped like vLLM's (FastAPI + uvicorn) from the outside.

Routes: exactly those of vLLM 0.32's app for a generate model (``ROUTES``, in vLLM's order; the core's
``catalog/vllm_routes.json`` is written from the real app and tests/sim compares the two), so a path vLLM
has never answers 404 here and one it has not does. Chat and text completions (also through the SageMaker
``/invocations``, dispatched by the body as vLLM does), /tokenize and /detokenize (a byte-level tokenizer),
health, version, load, metrics (vLLM's Prometheus mount answers any method below /metrics) and the docs
answer as vLLM does; the scale-out routes answer vLLM's 403 (disabled), stored responses its 404; the
remaining routes validate the request as vLLM does and refuse a valid one with a 400 naming the stand-in.
Bodies, status codes, 405 for a wrong method, the 400 of a POST that is not JSON, the 401 of API-key
enforcement (vLLM's middleware: only paths under /v1, /v2, /inference, /cohere, every method but OPTIONS) and
SSE streaming follow vLLM 0.32.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import vlog
from .engine import ApiError, Engine, Generation, count_tokens, engine_dead

GUARDED_PREFIX = ("/v1", "/v2", "/inference", "/cohere")
SCALE_OUT_DISABLED = "Scale-out endpoints are disabled. Restart vllm serve with --enable-scale-out to enable them."


@dataclass(frozen=True)
class Route:
    """A route of vLLM's app: ``{name}`` path parameters; a mount takes every method on and below its path.
    ``json_body``: vLLM's validate_json_request dependency (a POST without a JSON content type is a 400)."""

    path: str
    methods: tuple[str, ...]
    handler: str
    mount: bool = False
    json_body: bool = False

    def matches(self, path: str) -> bool:
        if self.mount:
            return path == self.path or path.startswith(self.path + "/")
        return re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(self.path)), path) is not None


def _post(path: str, handler: str, json_body: bool = True) -> Route:
    return Route(path, ("POST",), handler, json_body=json_body)


DOCS = ("GET", "HEAD")
ROUTES: tuple[Route, ...] = (
    Route("/openapi.json", DOCS, "_openapi"),
    Route("/docs", DOCS, "_docs"),
    Route("/docs/oauth2-redirect", DOCS, "_docs"),
    Route("/redoc", DOCS, "_docs"),
    Route("/load", ("GET",), "_load"),
    Route("/version", ("GET",), "_version"),
    Route("/kv_event_sources", ("GET",), "_kv_event_sources"),
    Route("/health", ("GET",), "_health"),
    Route("/metrics", ("GET",), "_metrics"),
    Route("/metrics", (), "_metrics", mount=True),
    _post("/tokenize", "_tokenize"),
    _post("/detokenize", "_detokenize"),
    Route("/v1/models", ("GET",), "_models"),
    _post("/v1/systemone", "_systemone"),
    Route("/ping", ("GET",), "_health"),
    _post("/ping", "_health", json_body=False),
    _post("/invocations", "_invocations"),
    _post("/v1/chat/completions", "_chat"),
    _post("/v1/chat/completions/batch", "_chat_batch"),
    _post("/v1/responses", "_responses"),
    Route("/v1/responses/{response_id}", ("GET",), "_stored_response"),
    _post("/v1/responses/{response_id}/cancel", "_stored_response", json_body=False),
    _post("/v1/completions", "_completion"),
    _post("/v1/messages", "_messages"),
    _post("/v1/messages/count_tokens", "_count_tokens"),
    _post("/generative_scoring", "_generative_scoring"),
    _post("/scale_elastic_ep", "_scale_elastic_ep"),
    _post("/is_scaling_elastic_ep", "_is_scaling", json_body=False),
    *(
        _post(path, "_scale_out", json_body=False)
        for path in (
            "/v1/chat/completions/render",
            "/v1/messages/render",
            "/v1/completions/render",
            "/v1/responses/render",
            "/v1/chat/completions/derender",
            "/v1/completions/derender",
            "/inference/v1/generate",
            "/inference/v1/abort_requests",
        )
    ),
)


def _invalid(*errors: tuple[str, str]) -> ApiError:
    """vLLM's 400 for a request its pydantic model refuses: ``(loc, message)`` per error."""
    noun = "error" if len(errors) == 1 else "errors"
    lines = "".join(f"\n  {message}" for _, message in errors)
    return ApiError(400, "Bad Request", f"{len(errors)} validation {noun}:{lines}", errors[0][0] or None)


def _require(body: dict[str, Any], *fields: str) -> None:
    shown = f"<dict of {len(body)} items>"
    missing = [f for f in fields if f not in body]
    if missing:
        raise _invalid(
            *(
                (f"body.{f}", str({"type": "missing", "loc": f"body.{f}", "msg": "Field required", "input": shown}))
                for f in missing
            )
        )


def _not_simulated(path: str) -> ApiError:
    return ApiError(400, "BadRequestError", f"{path} is not simulated by the ms4fleet vLLM stand-in")


class StandinServer(ThreadingHTTPServer):
    """A threading HTTP server that binds early and listens only once the engine is ready."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine: Engine | None, api_keys: list[str]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler, bind_and_activate=False)
        self.engine = engine
        self._token_hashes = [hashlib.sha256(k.encode()).digest() for k in api_keys]
        # Draining (SIGTERM with --shutdown-timeout > 0): new requests are refused, those in flight finish.
        self.draining = False
        self._active = 0
        self._idle = threading.Condition()

    def start_drain(self) -> None:
        with self._idle:
            self.draining = True

    @contextmanager
    def request(self) -> Iterator[bool]:
        """Admit a request (False once draining) and count it as in flight while it runs, for ``wait_idle``."""
        with self._idle:
            if self.draining:
                admitted = False
            else:
                admitted = True
                self._active += 1
        if not admitted:
            yield False
            return
        try:
            yield True
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    @property
    def in_flight(self) -> int:
        """Requests being served now (vLLM's /load)."""
        with self._idle:
            return self._active

    def wait_idle(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for no request in flight; return how many are left."""
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout=timeout_s)
            return self._active

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can hang on a host without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def authorized(self, header: str | None) -> bool:
        """vLLM's AuthenticationMiddleware: ``Authorization: Bearer <key>``, compared in constant time."""
        if not self._token_hashes:
            return True
        if not header:
            return False
        scheme, _, param = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = hashlib.sha256(param.encode()).digest()
        match = False
        for token in self._token_hashes:
            match |= secrets.compare_digest(digest, token)
        return match


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandinServer

    def version_string(self) -> str:
        return "uvicorn"

    # -- plumbing ------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        # Uvicorn's access-log line instead of http.server's.
        del format, args

    def _access_log(self, status: int) -> None:
        phrase = HTTPStatus(status).phrase
        client = f"{self.client_address[0]}:{self.client_address[1]}"
        vlog.uvicorn(f'{client} - "{self.command} {self.path} {self.request_version}" {status} {phrase}')

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._access_log(status)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value, separators=(",", ":")).encode())

    def _error(self, error: ApiError) -> None:
        self._json(error.status, error.body())

    @property
    def engine(self) -> Engine:
        assert self.server.engine is not None, "the server listens only once the engine exists"
        return self.server.engine

    def _guarded(self, path: str) -> bool:
        # vLLM's AuthenticationMiddleware runs before routing: an unknown guarded path is a 401 too.
        if self.command == "OPTIONS" or not path.startswith(GUARDED_PREFIX):
            return False
        if self.server.authorized(self.headers.get("Authorization")):
            return False
        self._json(401, {"error": "Unauthorized"})
        return True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _json_body(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            raise ApiError(400, "BadRequestError", f"JSON decode error: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(
                400, "BadRequestError", "Input should be a valid dictionary or object to extract fields from"
            )
        return body

    # -- routing -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        # Read the body first, whatever the answer: unread bytes would corrupt a kept-alive connection.
        raw = self._read_body()
        path = self.path.split("?", 1)[0]
        if self._guarded(path):
            return
        matched = [r for r in ROUTES if r.matches(path)]
        route = next((r for r in matched if r.mount or self.command in r.methods), None)
        if route is None:
            self._json(405 if matched else 404, {"detail": "Method Not Allowed" if matched else "Not Found"})
            return
        if self.command != "POST" or route.handler in ("_health", "_metrics"):
            self._answer(route, path, raw)
            return
        with self.server.request() as admitted:
            if admitted:
                self._answer(route, path, raw)
                return
        # vLLM's engine rejects work once its shutdown began; a load balancer retries another replica on 503.
        self.close_connection = True
        self._error(ApiError(503, "ServiceUnavailableError", "Server shutting down"))

    def _answer(self, route: Route, path: str, raw: bytes) -> None:
        handler: Callable[[str, bytes], None] = getattr(self, route.handler)
        try:
            if route.json_body and not (self.headers.get("content-type") or "").startswith("application/json"):
                raise ApiError(
                    400,
                    "Bad Request",
                    "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
                )
            handler(path, raw)
        except ApiError as error:
            self._error(error)

    # -- routes --------------------------------------------------------------------------------
    def _health(self, path: str, raw: bytes) -> None:
        self._send(200 if self.engine.healthy() else 503, b"")

    def _version(self, path: str, raw: bytes) -> None:
        self._json(200, {"version": self.engine.version})

    def _load(self, path: str, raw: bytes) -> None:
        self._json(200, {"server_load": self.server.in_flight})

    def _kv_event_sources(self, path: str, raw: bytes) -> None:
        self._json(200, {})

    def _metrics(self, path: str, raw: bytes) -> None:
        self._send(200, self.engine.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8")

    def _openapi(self, path: str, raw: bytes) -> None:
        paths: dict[str, dict[str, Any]] = {}
        for route in ROUTES:
            if route.handler not in ("_openapi", "_docs") and not route.mount:
                paths.setdefault(route.path, {}).update({m.lower(): {} for m in route.methods})
        self._json(200, {"openapi": "3.1.0", "info": {"title": "FastAPI", "version": "0.1.0"}, "paths": paths})

    def _docs(self, path: str, raw: bytes) -> None:
        page = f"<!DOCTYPE html><html><head><title>FastAPI - {path}</title></head><body></body></html>"
        self._send(200, page.encode(), "text/html; charset=utf-8")

    def _models(self, path: str, raw: bytes) -> None:
        self._json(200, self._model_list())

    def _invocations(self, path: str, raw: bytes) -> None:
        # vLLM tries its ChatCompletionRequest model first (it needs messages), then CompletionRequest.
        body = self._json_body(raw)
        if isinstance(body.get("messages"), list):
            self._chat_body(body)
        else:
            self._completion_body(body)

    def _chat(self, path: str, raw: bytes) -> None:
        self._chat_body(self._json_body(raw))

    def _completion(self, path: str, raw: bytes) -> None:
        self._completion_body(self._json_body(raw))

    def _tokenize(self, path: str, raw: bytes) -> None:
        body = self._json_body(raw)
        if "prompt" in body:
            text = str(body["prompt"])
        elif isinstance(body.get("messages"), list):
            text = "".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
        else:
            _require(body, "prompt", "messages")
        self.engine.check_model(body.get("model"))
        # A byte-level tokenizer: every UTF-8 byte a token, so /detokenize restores the text exactly.
        tokens = list(text.encode())
        self._json(
            200,
            {
                "count": len(tokens),
                "max_model_len": self.engine.plan.max_model_len,
                "tokens": tokens,
                "token_strs": None,
            },
        )

    def _detokenize(self, path: str, raw: bytes) -> None:
        body = self._json_body(raw)
        _require(body, "tokens")
        self.engine.check_model(body.get("model"))
        tokens = body["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, int) and 0 <= t < 256 for t in tokens):
            raise ApiError(400, "BadRequestError", "Token id out of vocabulary", "tokens")
        self._json(200, {"prompt": bytes(tokens).decode(errors="replace")})

    def _count_tokens(self, path: str, raw: bytes) -> None:
        body = self._json_body(raw)
        _require(body, "model", "messages")
        self.engine.check_model(body.get("model"))
        messages = body["messages"] if isinstance(body["messages"], list) else []
        text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        self._json(200, {"input_tokens": count_tokens(text)})

    def _is_scaling(self, path: str, raw: bytes) -> None:
        self._json(200, {"is_scaling_elastic_ep": False})

    def _scale_elastic_ep(self, path: str, raw: bytes) -> None:
        if "new_data_parallel_size" not in self._json_body(raw):
            raise ApiError(400, "Bad Request", "new_data_parallel_size is required")
        raise _not_simulated(path)

    def _scale_out(self, path: str, raw: bytes) -> None:
        raise ApiError(403, "PermissionDeniedError", SCALE_OUT_DISABLED)

    def _stored_response(self, path: str, raw: bytes) -> None:
        # vLLM stores no response unless VLLM_ENABLE_RESPONSES_API_STORE is set: every id is unknown.
        response_id = path.split("/")[3]
        raise ApiError(404, "invalid_request_error", f"Response with id '{response_id}' not found.", "response_id")

    def _validated_only(self, path: str, raw: bytes, *fields: str) -> None:
        _require(self._json_body(raw), *fields)
        raise _not_simulated(path)

    def _systemone(self, path: str, raw: bytes) -> None:
        self._validated_only(path, raw, "state", "questions")

    def _chat_batch(self, path: str, raw: bytes) -> None:
        self._validated_only(path, raw, "messages")

    def _responses(self, path: str, raw: bytes) -> None:
        self._validated_only(path, raw, "input")

    def _messages(self, path: str, raw: bytes) -> None:
        self._validated_only(path, raw, "model", "messages", "max_tokens")

    def _generative_scoring(self, path: str, raw: bytes) -> None:
        self._validated_only(path, raw, "query", "items", "label_token_ids")

    def _model_list(self) -> dict[str, Any]:
        engine = self.engine
        data = [
            {
                "id": name,
                "object": "model",
                "created": engine.created,
                "owned_by": "vllm",
                "root": engine.args.model,
                "parent": None,
                "max_model_len": engine.plan.max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid4().hex}",
                        "object": "model_permission",
                        "created": engine.created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for name in engine.served_names
        ]
        return {"object": "list", "data": data}

    # -- completions ---------------------------------------------------------------------------
    def _chat_body(self, body: dict[str, Any]) -> None:
        engine = self.engine
        if engine.dead:
            raise engine_dead()
        model, gen = engine.plan_chat(body)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(self._chat_chunks(request_id, created, model, gen, include_usage))
            return
        reasoning: list[str] = []
        content: list[str] = []
        calls: list[dict[str, Any]] = []
        for kind, value in engine.decode(gen):
            if kind == "tool_call":
                calls.append(value)
            else:
                (reasoning if kind == "reasoning" else content).append(value)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if calls else "".join(content),
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "reasoning": "".join(reasoning) if reasoning else None,
        }
        if calls:
            message["tool_calls"] = calls
        self._json(
            200,
            {
                "id": request_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": gen.finish_reason,
                        "stop_reason": None,
                        "token_ids": None,
                    }
                ],
                "service_tier": None,
                "system_fingerprint": None,
                "usage": _usage(gen),
                "prompt_logprobs": None,
                "prompt_token_ids": None,
                "kv_transfer_params": None,
            },
        )

    def _chat_chunks(
        self, request_id: str, created: int, model: str, gen: Generation, include_usage: bool
    ) -> Generator[dict[str, Any], None, None]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }

        decoded = self.engine.decode(gen)
        # Decode starts before the first chunk, so an engine that dies on its first token fails the
        # request with an error status instead of a 200 stream.
        first = next(decoded, None)
        yield chunk({"role": "assistant", "content": ""})
        tool_index = 0
        items = iter(()) if first is None else _chain(first, decoded)
        for kind, value in items:
            if kind == "tool_call":
                yield chunk({"tool_calls": [{"index": tool_index, **value}]})
                tool_index += 1
            else:
                yield chunk({kind: value})
        yield chunk({}, gen.finish_reason)
        if include_usage:
            yield {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(gen),
            }

    def _completion_body(self, body: dict[str, Any]) -> None:
        engine = self.engine
        if engine.dead:
            raise engine_dead()
        model, gen = engine.plan_completion(body)
        request_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(self._completion_chunks(request_id, created, model, gen, include_usage))
            return
        text = "".join(value for _, value in engine.decode(gen))
        self._json(
            200,
            {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": gen.finish_reason,
                        "stop_reason": None,
                        "token_ids": None,
                        "prompt_logprobs": None,
                        "prompt_token_ids": None,
                    }
                ],
                "service_tier": None,
                "system_fingerprint": None,
                "usage": _usage(gen),
                "kv_transfer_params": None,
            },
        )

    def _completion_chunks(
        self, request_id: str, created: int, model: str, gen: Generation, include_usage: bool
    ) -> Generator[dict[str, Any], None, None]:
        def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
            return {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}],
            }

        decoded = self.engine.decode(gen)
        first = next(decoded, None)
        items = iter(()) if first is None else _chain(first, decoded)
        for _, text in items:
            yield chunk(text)
        yield chunk("", gen.finish_reason)
        if include_usage:
            yield {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(gen),
            }

    def _stream(self, chunks: Generator[dict[str, Any], None, None]) -> None:
        """Server-sent events, chunked: ``data: {...}`` per chunk, then ``data: [DONE]``."""
        try:
            first = next(chunks)
        except ApiError as error:
            self._error(error)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self._access_log(200)
        try:
            self._write_event(first)
            for item in chunks:
                self._write_event(item)
        except ApiError as error:
            # After the 200 is sent, vLLM reports a failure as an error event in the stream.
            self._write_event(error.body())
        except (BrokenPipeError, ConnectionResetError):
            # The client went away: vLLM aborts the request; here the decode generator is closed below.
            self.close_connection = True
            return
        finally:
            chunks.close()
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    def _write_event(self, value: dict[str, Any]) -> None:
        self._write_chunk(b"data: " + json.dumps(value, separators=(",", ":")).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _chain(first: tuple[str, Any], rest: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    yield first
    yield from rest


def _usage(gen: Generation) -> dict[str, Any]:
    return {
        "prompt_tokens": gen.prompt_tokens,
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        "completion_tokens": gen.completion_tokens,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
