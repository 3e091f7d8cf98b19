"""Peer staging on one host: pull a weights revision file by file from a feeder, verify each file against the
pinned manifest, serve the verified files to the hosts this one feeds. Standard library only: shipped to hosts
with ``weights_verify.py`` (``bootstrap()`` loads both from SSH stdin).

    weights_relay.py relay DIR --repo R --revision REV [--owner USER[:GROUP]] --bind ADDR --port P

stdin, one JSON object a line: first ``{"token": T, "manifest": TEXT}`` (the per-run token feeders demand and
the controller's pinned manifest: a feeder's own manifest is never read), then ``{"feeder": URL}`` whenever
the controller (re)assigns this host's feeder (``URL`` ends in ``/``; ``null``: wait). End of stdin stops it.
stdout, one JSON event a line: ``serving`` (the port), ``have`` (a file verified: this host may feed it),
``progress``, ``feeder_down`` / ``feeder_bad`` (the file and the feeder that failed or sent bytes that do not
match the manifest: never kept, never served), ``verified`` / ``failed`` (the finalize report).

A host serves only files it verified itself (hashed while they arrived, or proven by its own verify), only to
requests carrying the token, through descriptors opened without following links, from ``DIR`` or ``DIR.partial``.
A file is pulled into ``DIR.partial`` and resumed at its length (HTTP Range) after an interruption.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import quote, unquote, urlsplit

try:
    from ms4fleet.hostside import weights_verify as hv
except ImportError:  # shipped: bootstrap() registered the verifier under its own name
    import weights_verify as hv  # type: ignore[no-redef,import-not-found]

CHUNK = 1024 * 1024
PROGRESS_EVERY_S = 0.5
RETRY_S = 0.5
# A feeder that vanishes (a killed host answers nothing) is given up after this long without a byte.
READ_TIMEOUT_S = 10
FILES_PATH = "/files/"
# The program run on a host: reads this script and the verifier from stdin (length-prefixed), then runs main.
BOOTSTRAP = (
    "import sys,types\n"
    "def load(name):\n"
    "    size=int(sys.stdin.buffer.readline())\n"
    "    module=types.ModuleType(name); sys.modules[name]=module\n"
    "    exec(compile(sys.stdin.buffer.read(size),name+'.py','exec'),module.__dict__)\n"
    "    return module\n"
    "load('weights_verify')\n"
    "sys.exit(load('weights_relay').main(sys.argv[1:]))\n"
)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps(dict(fields, event=event)) + "\n")
    sys.stdout.flush()


class Shelf:
    """The directory being served and which of its files are verified (the only ones served)."""

    def __init__(self, root: str, files: Dict[str, Dict[str, Any]], token: str) -> None:
        self.root_fd = hv.open_dir(root)  # stays valid when finalize renames DIR.partial onto DIR
        self.files = files
        self.token = token
        self.ready: Set[str] = set()
        self.lock = threading.Lock()

    def is_ready(self, rel: str) -> bool:
        with self.lock:
            return rel in self.ready

    def add(self, rel: str) -> None:
        with self.lock:
            self.ready.add(rel)


def make_handler(shelf: Shelf) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _refuse(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), ("Bearer " + shelf.token).encode()):
                return self._refuse(401)
            rel = unquote(self.path[len(FILES_PATH) :]) if self.path.startswith(FILES_PATH) else ""
            if rel not in shelf.files:
                return self._refuse(404)
            if not shelf.is_ready(rel):
                # Not verified here yet: the asking host retries (it is fed while this host is fed).
                return self._refuse(503)
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes=") and ranged.endswith("-") and ranged[6:-1].isdigit():
                start = int(ranged[6:-1])
            fd = hv.open_regular(shelf.root_fd, rel)
            try:
                size = os.fstat(fd).st_size
                start = min(start, size)
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(size - start))
                if start:
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
                self.end_headers()
                self.wfile.flush()
                offset = start
                while offset < size:
                    sent = os.sendfile(self.connection.fileno(), fd, offset, min(size - offset, 64 * CHUNK))
                    if not sent:
                        break
                    offset += sent
            finally:
                os.close(fd)
            return None

    return Handler


def _size(root_fd: int, rel: str) -> int:
    """The length of ``rel`` so far (0 when absent)."""
    try:
        return hv.lstat_at(root_fd, rel).st_size
    except FileNotFoundError:
        return 0


def _open_for_append(root_fd: int, rel: str) -> int:
    """``rel`` under ``root_fd`` opened for appending, creating directories; no link is ever followed."""
    parts = rel.split("/")
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, hv._DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(
            parts[-1], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | hv._CLOEXEC, 0o644, dir_fd=fd
        )
    finally:
        os.close(fd)


class Feeder:
    """The URL this host pulls from, replaced by the controller at any time."""

    def __init__(self) -> None:
        self.url: Optional[str] = None
        self.version = 0
        self.closed = threading.Event()
        self.changed = threading.Condition()

    def set(self, url: Optional[str]) -> None:
        with self.changed:
            self.url, self.version = url, self.version + 1
            self.changed.notify_all()

    def wait_new(self, version: int, timeout: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.version != version or self.closed.is_set(), timeout)


def _get(url: str, rel: str, start: int, token: str) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    parts = urlsplit(url)
    conn_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_type(parts.hostname or "", parts.port, timeout=READ_TIMEOUT_S)
    headers = {"Range": "bytes=%d-" % start} if start else {}
    if token:
        headers["Authorization"] = "Bearer " + token
    conn.request("GET", parts.path + quote(rel), headers=headers)
    return conn, conn.getresponse()


class Puller:
    def __init__(self, shelf: Shelf, feeder: Feeder, source_token: Dict[str, str]) -> None:
        self.shelf = shelf
        self.feeder = feeder
        # Feeders that are hosts want the run's token; the source (a mirror) gets none.
        self.source_token = source_token
        self.moved = 0
        self.last_report = 0.0

    def _prefix_digest(self, rel: str, size: int) -> "hashlib._Hash":
        digest = hashlib.sha256()
        if size:
            fd = hv.open_regular(self.shelf.root_fd, rel)
            with os.fdopen(fd, "rb", buffering=0) as handle:
                for block in iter(lambda: handle.read(8 * CHUNK), b""):
                    digest.update(block)
        return digest

    def _report(self, total: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_report >= PROGRESS_EVERY_S:
            self.last_report = now
            emit("progress", moved=self.moved, total=total)

    def pull(self, rel: str, total: int) -> None:
        entry = self.shelf.files[rel]
        while not self.feeder.closed.is_set():
            version, url = self.feeder.version, self.feeder.url
            if url is None:
                self.feeder.wait_new(version, 5.0)
                continue
            have = _size(self.shelf.root_fd, rel)
            digest = self._prefix_digest(rel, have)
            try:
                if have < entry["size"]:
                    self._stream(url, rel, have, digest, total)
                else:
                    os.close(_open_for_append(self.shelf.root_fd, rel))  # an empty file arrives without a request
            except (OSError, http.client.HTTPException) as err:
                emit("feeder_down", feeder=url, path=rel, error=str(err) or type(err).__name__)
                self.feeder.wait_new(version, 2.0)
                continue
            except NotReady:
                self.feeder.wait_new(version, RETRY_S)
                continue
            if _size(self.shelf.root_fd, rel) == entry["size"] and digest.hexdigest() == entry["sha256"]:
                self.shelf.add(rel)
                emit("have", path=rel)
                return
            _remove(self.shelf.root_fd, rel)
            if have:
                # The bytes kept from before may be the bad ones: start the file over before blaming the feeder.
                continue
            # Bytes that do not match the pinned manifest: dropped, and this feeder is not asked again.
            emit("feeder_bad", feeder=url, path=rel)
            self.feeder.wait_new(version, 3600.0)

    def _stream(self, url: str, rel: str, start: int, digest: "hashlib._Hash", total: int) -> None:
        token = self.source_token.get(url, self.shelf.token)
        conn, response = _get(url, rel, start, token)
        try:
            if response.status in (404, 503):
                raise NotReady()
            if response.status not in (200, 206) or (start and response.status == 200):
                if response.status == 200:
                    # The feeder ignored Range: start the file over.
                    _remove(self.shelf.root_fd, rel)
                    raise NotReady()
                raise http.client.HTTPException("HTTP %d" % response.status)
            fd = _open_for_append(self.shelf.root_fd, rel)
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    os.write(fd, block)
                    digest.update(block)
                    self.moved += len(block)
                    self._report(total)
            finally:
                os.close(fd)
        finally:
            conn.close()


class NotReady(Exception):
    """The feeder does not hold the file verified yet."""


def _remove(root_fd: int, rel: str) -> None:
    try:
        fd, name = hv._parent_fd(root_fd, rel)
    except FileNotFoundError:
        return
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def _read_control(feeder: Feeder) -> None:
    for line in sys.stdin:
        message = json.loads(line)
        if "feeder" in message:
            feeder.set(message["feeder"])
    feeder.closed.set()
    feeder.set(None)


def _install_manifest(root: str, text: str) -> None:
    meta = os.path.join(root, hv.META_DIR)
    os.makedirs(meta, mode=hv.META_DIR_MODE, exist_ok=True)
    tmp = os.path.join(meta, "manifest.pinned")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | hv._CLOEXEC, hv.META_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, hv.manifest_path(root))


def relay(args: argparse.Namespace, hello: Dict[str, Any]) -> int:
    directory = os.path.abspath(args.dir)
    expect = {"repo": args.repo, "revision": args.revision}
    prepared = hv.prepare(directory, **expect)
    if prepared["error"] and not prepared["action"]:
        emit("failed", error="prepare: " + prepared["error"])
        return 1
    holder = prepared["action"] == "none"
    root = directory if holder else hv.staging_dir(directory)
    if not holder:
        _install_manifest(root, hello["manifest"])
    manifest, _digest = hv.load_manifest(root)
    if not holder and (manifest.get("repo"), manifest.get("revision")) != (args.repo, args.revision):
        emit("failed", error="the pinned manifest is not %s at %s" % (args.repo, args.revision))
        return 1
    files = {entry["path"]: entry for entry in manifest["files"]}
    shelf = Shelf(root, files, hello["token"])
    checked = hv.verify(root, **expect)
    bad = {item["path"] for item in checked["bad"]}
    for rel, entry in files.items():
        if holder or rel not in bad:
            shelf.add(rel)
        elif _size(shelf.root_fd, rel) >= entry["size"]:
            # Whole but wrong (or too long): it starts over; a shorter file resumes at its end.
            _remove(shelf.root_fd, rel)
    server = ThreadingHTTPServer((args.bind, args.port), make_handler(shelf))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    emit("serving", port=server.server_address[1], holder=holder, action=prepared["action"], have=sorted(shelf.ready))
    feeder = Feeder()
    threading.Thread(target=_read_control, args=(feeder,), daemon=True).start()
    total = sum(entry["size"] for rel, entry in files.items() if rel not in shelf.ready)
    code = 0
    if not holder:
        puller = Puller(shelf, feeder, {url: "" for url in hello.get("sources", [])})
        pulled = []
        for rel in files:
            if not shelf.is_ready(rel):
                puller.pull(rel, total)
                pulled.append(rel)
        puller._report(total, force=True)
        if feeder.closed.is_set() and len(shelf.ready) < len(files):
            emit("failed", error="stopped before every file arrived")
            return 1
        hv.mark_verified(root, pulled)
        final = hv.finalize(directory, owner=args.owner, **expect)
        if not final["ok"]:
            emit("failed", error=final["error"], bad=final["bad"])
            code = 1
        else:
            emit("verified", files=final["files"], hashed=final["hashed"], moved=puller.moved)
    else:
        emit("verified", files=len(files), hashed=checked["hashed"], moved=0)
    # Keep feeding until the controller says the fleet is done (end of stdin).
    if code == 0:
        feeder.closed.wait()
    server.shutdown()
    return code


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="weights_relay.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("relay")
    cmd.add_argument("dir")
    cmd.add_argument("--repo", required=True)
    cmd.add_argument("--revision", required=True)
    cmd.add_argument("--owner")
    cmd.add_argument("--bind", required=True)
    cmd.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    hello = json.loads(sys.stdin.readline())
    try:
        return relay(args, hello)
    except (OSError, ValueError, hv.ManifestError) as err:
        emit("failed", error=str(err))
        return 2


def bootstrap_input(verifier: bytes, relay_source: bytes, hello: Dict[str, Any]) -> bytes:
    """What ``BOOTSTRAP`` reads on stdin: both scripts, then the first control line."""
    out = b""
    for source in (verifier, relay_source):
        out += b"%d\n" % len(source) + source
    return out + json.dumps(hello).encode() + b"\n"


if __name__ == "__main__":
    sys.exit(main())
