"""A Hugging Face Hub-compatible test server on 127.0.0.1, plus a static mirror, with a request log.

It implements what huggingface_hub 1.x calls to download a model at a revision:

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: model info (``sha``, ``siblings``).
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=...``: the file listing, LFS files with ``lfs.oid``
  (their sha256) and ``lfs.size``, others with their git blob id as ``oid``.
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``; a regular file answers 200 with ``ETag`` =
  its git blob id; an LFS file answers 302 to a "CDN" on another host name (``localhost``) with
  ``X-Linked-Etag`` = sha256 and ``X-Linked-Size``, as the real Hub does, so the client drops the token.
- ``HEAD|GET /cdn/{sha256}``: the LFS blob, with ``Range`` support (206 + ``Content-Range``).
- Errors with the headers the client maps: ``X-Error-Code: GatedRepo`` (401 without a token, 403 with a
  token that was not granted access), ``RevisionNotFound``, ``EntryNotFound``, ``RepoNotFound``; an unknown
  token gets 401 ``X-Error-Message: Invalid credentials in Authorization header``.
- ``HEAD|GET /mirror/<path>``: files under ``mirror_root`` (an ms4fleet mirror tree), with Range (unless
  ``ignore_range``), sent with ``sendfile`` so a benchmark measures the client, not this server;
  ``/mirror-redirect/<path>`` answers 302 to the same file on the "CDN" host name.

Faults: ``drop_after(path_or_sha256, n)`` makes the next GET of that file close the connection after ``n``
body bytes. Every request is logged as a ``Hit`` (method, path, range, whether a token was sent and whether it
was valid, status, body bytes sent); the token itself is never recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_MIN_SIZE = 100_000


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class RepoFileData:
    path: str
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blob_id(self) -> str:
        if self.lfs:
            # The git blob of an LFS file is its pointer file.
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n"
            return git_blob_sha1(pointer.encode())
        return git_blob_sha1(self.data)


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, dict[str, RepoFileData]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    granted_tokens: set[str] = field(default_factory=set)

    def add_commit(self, files: dict[str, bytes], ref: str = "main") -> str:
        digest = hashlib.sha1(repr(sorted((p, hashlib.sha256(d).hexdigest()) for p, d in files.items())).encode())
        sha = digest.hexdigest()
        self.commits[sha] = {
            p: RepoFileData(p, d, p.endswith(".safetensors") or len(d) >= LFS_MIN_SIZE) for p, d in files.items()
        }
        self.refs[ref] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    range: str | None
    token: str  # "none", "valid" or "invalid": never the token itself
    status: int
    body_bytes: int


class HubServer:
    """Start with ``with HubServer() as hub:``; ``hub.url`` is the endpoint for ``HF_ENDPOINT``."""

    def __init__(self, known_tokens: set[str] | None = None, mirror_root: Path | None = None) -> None:
        self.repos: dict[str, Repo] = {}
        self.known_tokens = set(known_tokens or ())
        self.mirror_root = mirror_root
        self.hits: list[Hit] = []
        # Act like a server without Range support (always 200 with the whole file) on /mirror/.
        self.ignore_range = False
        self._drops: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cdn_url = f"http://localhost:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hubserver", daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def add_repo(self, repo_id: str, gated: bool = False) -> Repo:
        repo = Repo(repo_id, gated=gated)
        self.repos[repo_id] = repo
        return repo

    def drop_after(self, key: str, nbytes: int) -> None:
        """The next GET whose URL path ends with ``key`` is cut after ``nbytes`` body bytes."""
        with self._lock:
            self._drops[key] = nbytes

    def fail_next(self, key: str, status: int = 500) -> None:
        """The next GET whose URL path ends with ``key`` answers ``status`` with no body."""
        with self._lock:
            self._failures[key] = status

    def _take_failure(self, path: str) -> int | None:
        with self._lock:
            for key, status in list(self._failures.items()):
                if path.endswith(key):
                    del self._failures[key]
                    return status
        return None

    def _take_drop(self, path: str) -> int | None:
        with self._lock:
            for key, nbytes in list(self._drops.items()):
                if path.endswith(key):
                    del self._drops[key]
                    return nbytes
        return None

    def record(self, hit: Hit) -> int:
        with self._lock:
            self.hits.append(hit)
            return len(self.hits) - 1

    def correct(self, index: int, body_bytes: int) -> None:
        """Set the bytes a logged reply really carried (the peer may have gone away mid-body)."""
        with self._lock:
            if index < len(self.hits):
                self.hits[index] = replace(self.hits[index], body_bytes=body_bytes)

    def clear(self) -> None:
        with self._lock:
            self.hits.clear()

    def gets(self, suffix: str = "") -> list[Hit]:
        """Body-carrying GETs of files (resolve, CDN or mirror) whose path ends with ``suffix``."""
        return [
            h
            for h in self.hits
            if h.method == "GET" and not h.path.startswith("/api/") and h.path.endswith(suffix) and h.status < 300
        ]

    def body_bytes(self) -> int:
        return sum(h.body_bytes for h in self.hits if h.method == "GET")

    def write_log(self, path: Path) -> None:
        path.write_text("".join(json.dumps(h.__dict__) + "\n" for h in self.hits), encoding="utf-8")


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>tree|revision)/(?P<rev>[^/]+)(?:/(?P<path>.*))?)?$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        # --- plumbing ---------------------------------------------------------------------------------------
        def _token_state(self) -> tuple[str, str | None]:
            auth = self.headers.get("Authorization")
            if not auth:
                return "none", None
            token = auth.removeprefix("Bearer ").strip()
            return ("valid" if token in server.known_tokens else "invalid"), token

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"", sent: int | None = None) -> None:
            cut = len(body) if sent is None else min(sent, len(body))
            written = cut if self.command != "HEAD" else 0
            # Log before replying: a client may act on the reply before this thread runs again.
            self._record(status, written)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if written:
                self.wfile.write(body[:cut])
            if cut < len(body) and self.command != "HEAD":
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)

        def _record(self, status: int, body_bytes: int) -> int:
            return server.record(
                Hit(self.command, self.path, self.headers.get("Range"), self._token_state()[0], status, body_bytes)
            )

        def _error(self, status: int, code: str | None, message: str) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, headers, json.dumps({"error": message}).encode())

        def _authorize(self, repo: Repo | None, repo_id: str) -> bool:
            state, token = self._token_state()
            if state == "invalid":
                self._error(401, None, "Invalid credentials in Authorization header")
                return False
            if repo is None:
                self._error(401 if state == "none" else 404, "RepoNotFound", "Repository not found")
                return False
            if repo.gated and token not in repo.granted_tokens:
                if state == "none":
                    self._error(
                        401,
                        "GatedRepo",
                        f"Access to model {repo_id} is restricted. You must have access "
                        "to it and be authenticated to access it. Please log in.",
                    )
                else:
                    self._error(
                        403,
                        "GatedRepo",
                        f"Access to model {repo_id} is restricted and you are not in "
                        f"the authorized list. Visit {server.url}/{repo_id} to ask for access.",
                    )
                return False
            return True

        def _ranged(self, data_len: int) -> tuple[int, int, dict[str, str], int] | None:
            """(start, end_exclusive, headers, status) for the request's Range; None after a 416."""
            headers = {"Accept-Ranges": "bytes"}
            spec = self.headers.get("Range")
            if not spec:
                headers["Content-Length"] = str(data_len)
                return 0, data_len, headers, 200
            match = _RANGE.match(spec.strip())
            if not match or int(match.group(1)) >= max(data_len, 1):
                self._send(416, {"Content-Range": f"bytes */{data_len}"})
                return None
            start = int(match.group(1))
            end = min(int(match.group(2)) + 1 if match.group(2) else data_len, data_len)
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{data_len}"
            headers["Content-Length"] = str(end - start)
            return start, end, headers, 206

        # --- routes -----------------------------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            failure = server._take_failure(path) if self.command == "GET" else None
            if failure is not None:
                self._error(failure, None, "Injected failure")
                return
            if path.startswith("/cdn/"):
                self._cdn(path.removeprefix("/cdn/"))
            elif path.startswith("/mirror/"):
                self._mirror(path.removeprefix("/mirror/"))
            elif path.startswith("/mirror-redirect/"):
                # A mirror front that sends clients to a storage host under another name.
                location = f"{server.cdn_url}/mirror/{path.removeprefix('/mirror-redirect/')}"
                self._send(302, {"Location": location})
            elif match := _API.match(path):
                self._api(match, parse_qs(url.query))
            elif match := _RESOLVE.match(path):
                self._resolve(match.group("repo"), match.group("rev"), match.group("path"))
            else:
                self._error(404, None, "Not found")

        def _api(self, match: re.Match[str], query: dict[str, list[str]]) -> None:
            repo_id = match.group("repo")
            repo = server.repos.get(repo_id)
            if not self._authorize(repo, repo_id):
                return
            assert repo is not None
            sha = repo.resolve(unquote(match.group("rev") or "main"))
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {match.group('rev')}")
                return
            files = repo.commits[sha]
            if match.group("kind") == "tree":
                prefix = (match.group("path") or "").strip("/")
                recursive = query.get("recursive", ["False"])[0].lower() == "true"
                body = json.dumps(_tree(files, prefix, recursive)).encode()
            else:
                body = json.dumps(
                    {
                        "id": repo_id,
                        "modelId": repo_id,
                        "sha": sha,
                        "private": False,
                        "gated": "manual" if repo.gated else False,
                        "disabled": False,
                        "siblings": [{"rfilename": p} for p in sorted(files)],
                    }
                ).encode()
            self._send(200, {"Content-Type": "application/json"}, body)

        def _resolve(self, repo_id: str, revision: str, rel: str) -> None:
            repo = server.repos.get(repo_id)
            if not self._authorize(repo, repo_id):
                return
            assert repo is not None
            sha = repo.resolve(revision)
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            entry = repo.commits[sha].get(rel)
            if entry is None:
                self._error(404, "EntryNotFound", f"{rel} does not exist at {revision}")
                return
            common = {"X-Repo-Commit": sha}
            if entry.lfs:
                location = f"{server.cdn_url}/cdn/{entry.sha256}?repo={quote(repo_id)}"
                self._send(
                    302,
                    {
                        **common,
                        "Location": location,
                        "ETag": f'"{entry.blob_id}"',
                        "X-Linked-Etag": f'"{entry.sha256}"',
                        "X-Linked-Size": str(len(entry.data)),
                    },
                )
                return
            self._body(entry.data, {**common, "ETag": f'"{entry.blob_id}"'}, rel)

        def _body(self, data: bytes, headers: dict[str, str], key: str) -> None:
            ranged = self._ranged(len(data))
            if ranged is None:
                return
            start, end, range_headers, status = ranged
            cut = server._take_drop(key) if self.command == "GET" else None
            self._send(status, {**headers, **range_headers}, data[start:end], sent=cut)

        def _cdn(self, sha256: str) -> None:
            for repo in server.repos.values():
                for files in repo.commits.values():
                    for entry in files.values():
                        if entry.lfs and entry.sha256 == sha256:
                            self._body(entry.data, {"ETag": f'"{sha256}"'}, entry.path)
                            return
            self._error(404, None, "No such blob")

        def _mirror(self, rel: str) -> None:
            root = server.mirror_root
            target = (root / rel).resolve() if root is not None else None
            if root is None or target is None or not target.is_relative_to(root.resolve()) or not target.is_file():
                self._error(404, None, "Not found")
                return
            size = target.stat().st_size
            ranged = self._ranged(size) if not server.ignore_range else (0, size, {"Content-Length": str(size)}, 200)
            if ranged is None:
                return
            start, end, headers, status = ranged
            cut = server._take_drop(rel) if self.command == "GET" else None
            count = 0 if self.command != "GET" else (end - start if cut is None else min(cut, end - start))
            index = self._record(status, count)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            sent = 0
            try:
                with target.open("rb") as handle:
                    while sent < count:
                        n = os.sendfile(self.connection.fileno(), handle.fileno(), start + sent, count - sent)
                        if n == 0:
                            break
                        sent += n
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                if sent != count:
                    server.correct(index, sent)
            if cut is not None and not self.close_connection:
                self.close_connection = True
                self.connection.shutdown(2)

    return Handler


def _tree(files: dict[str, RepoFileData], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    dirs: set[str] = set()
    for path in sorted(files):
        if prefix and not path.startswith(prefix + "/"):
            continue
        rest = path[len(prefix) + 1 :] if prefix else path
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(([prefix] if prefix else []) + parts[:depth])
            if folder not in dirs and (recursive or depth == 1):
                dirs.add(folder)
                out.append({"type": "directory", "oid": git_blob_sha1(folder.encode()), "size": 0, "path": folder})
        if len(parts) > 1 and not recursive:
            continue
        entry = files[path]
        item: dict[str, Any] = {"type": "file", "oid": entry.blob_id, "size": len(entry.data), "path": path}
        if entry.lfs:
            item["size"] = len(entry.data)
            item["lfs"] = {"oid": entry.sha256, "size": len(entry.data), "pointerSize": 134}
        out.append(item)
    return out


def synthetic_checkpoint(seed: int = 0, shard_bytes: int = 3 * 1024 * 1024) -> dict[str, bytes]:
    """A Mistral-native checkpoint plus the HF-format copy a profile must NOT download."""

    def blob(tag: str, size: int) -> bytes:
        header = json.dumps({"__metadata__": {"format": "pt", "tag": tag}}).encode()
        body = random.Random(f"{seed}:{tag}").randbytes(size)
        return (len(header).to_bytes(8, "little") + header + body)[:size]

    params = {"dim": 256, "n_layers": 2, "head_dim": 64, "n_heads": 4, "vocab_size": 1024, "seed": seed}
    return {
        "params.json": json.dumps(params, indent=2).encode(),
        "consolidated-00001-of-00002.safetensors": blob("c1", shard_bytes),
        "consolidated-00002-of-00002.safetensors": blob("c2", shard_bytes // 2),
        "tekken.json": blob("tekken", 150_000),
        "config.json": json.dumps({"architectures": ["Mistral3ForConditionalGeneration"]}).encode(),
        "model-00001-of-00002.safetensors": blob("m1", shard_bytes),
        "model-00002-of-00002.safetensors": blob("m2", shard_bytes // 2),
        "model.safetensors.index.json": json.dumps({"weight_map": {}}).encode(),
        "tokenizer.json": blob("tok", 120_000),
        "generation_config.json": b"{}",
        "README.md": b"# synthetic\n",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    }
