"""The OpenAI-compatible HTTP front end, shaped like vLLM's (FastAPI + uvicorn) from the outside.

Routes: GET /health, /ping, /version, /v1/models, /metrics; POST /ping, /v1/chat/completions,
/v1/completions. Bodies, status codes, the 401 of API-key enforcement (paths under /v1 only, as vLLM's
middleware guards) and SSE streaming follow vLLM 0.32.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import vlog
from .engine import ApiError, Engine, Generation, bad_request, engine_dead

GUARDED_PREFIX = ("/v1", "/v2", "/inference", "/cohere")
ROUTES = ("/health", "/ping", "/version", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions")


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

    def _guarded(self) -> bool:
        path = self.path.split("?", 1)[0]
        if path.startswith(GUARDED_PREFIX) and not self.server.authorized(self.headers.get("Authorization")):
            self._json(401, {"error": "Unauthorized"})
            return True
        return False

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _json_body(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            raise bad_request(f"JSON decode error: {exc}") from exc
        if not isinstance(body, dict):
            raise bad_request("Input should be a valid dictionary or object to extract fields from")
        return body

    # -- routes --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self._guarded():
            return
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/ping"):
            self._send(200 if self.engine.healthy() else 503, b"")
        elif path == "/version":
            self._json(200, {"version": self.engine.version})
        elif path == "/v1/models":
            self._json(200, self._models())
        elif path == "/metrics":
            self._send(200, self.engine.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        # Read the body first, whatever the answer: unread bytes would corrupt a kept-alive connection.
        raw = self._read_body()
        if self._guarded():
            return
        with self.server.request() as admitted:
            if admitted:
                self._post(raw)
                return
        # vLLM's engine rejects work once its shutdown began; a load balancer retries another replica on 503.
        self.close_connection = True
        self._error(ApiError(503, "ServiceUnavailableError", "Server shutting down"))

    def _post(self, raw: bytes) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/ping":
                self._send(200 if self.engine.healthy() else 503, b"")
            elif path == "/v1/chat/completions":
                self._chat(self._json_body(raw))
            elif path == "/v1/completions":
                self._completion(self._json_body(raw))
            else:
                self._json(404, {"detail": "Not Found"})
        except ApiError as error:
            self._error(error)

    def _models(self) -> dict[str, Any]:
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
    def _chat(self, body: dict[str, Any]) -> None:
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

    def _completion(self, body: dict[str, Any]) -> None:
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
