"""A tiny Docker Registry HTTP API v2 in this process (loopback, plain http): manifests by (repository, tag),
an optional Bearer challenge answered by its own token endpoint, and a log of every request."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ms4fleet.imagepin import MANIFEST_TYPES

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPES[0], "manifests": []}).encode()
DIGEST = f"sha256:{hashlib.sha256(MANIFEST).hexdigest()}"
TOKEN = "anonymous-pull-token"


@dataclass
class Registry:
    """``manifests``: (repository, tag) -> (body, digest header); ``bearer``: ask for a token first."""

    url: str = ""
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    bearer: bool = False
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@contextmanager
def serve() -> Iterator[Registry]:
    state = Registry()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, dict(self.headers)))
            if self.path.startswith("/token?"):
                self._send(200, json.dumps({"token": TOKEN}).encode(), {"Content-Type": "application/json"})
                return
            if state.bearer and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                realm = f'Bearer realm="{state.url}/token",service="fake",scope="repository:vllm/vllm-openai:pull"'
                self._send(401, b"{}", {"WWW-Authenticate": realm})
                return
            repository, _, tag = self.path.removeprefix("/v2/").rpartition("/manifests/")
            found = state.manifests.get((repository, tag))
            if found is None:
                self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', {})
                return
            body, digest = found
            self._send(200, body, {"Docker-Content-Digest": digest, "Content-Type": MANIFEST_TYPES[0]})

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
