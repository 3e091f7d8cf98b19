"""HTTP(S) downloads in bounded Range segments, for mirrors: resumable, and cheap to interrupt.

Each request asks for one ``SEGMENT`` (``Range: bytes=a-b``) on a kept-alive connection, and every byte
received is appended to the partial file at once; so an interruption (a dropped connection, a killed
process) costs at most one segment of re-transfer, whatever the network's buffers hold.

The standard library's ``http.client`` carries the bytes: on loopback it reads 1 MiB at a time at several
GB/s, where httpx's 64 KiB h11 reads top out near 300 MB/s (bench/weights_fetch.py), below curl. Proxies
are not used: a mirror is an internal service reached directly.

+ ``HttpSession(headers, allow_insecure=False)``: connections per origin, redirects followed (``get`` for
  small bodies); plain http (asked for, or redirected to) refused unless ``allow_insecure``.
+ ``ranged_download(session, url, target, progress, retries)``: fills a ``PartialFile``.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import time
from types import TracebackType
from urllib.parse import urljoin, urlsplit

from ms4fleet.weights.errors import SourceError
from ms4fleet.weights.transfer import PartialFile, Progress

log = logging.getLogger(__name__)

SEGMENT = 16 * 1024 * 1024
READ = 1024 * 1024
TIMEOUT = 60.0
MAX_REDIRECTS = 5
# Network trouble worth a retry; other OSErrors (no space left, unknown host) are not.
_TRANSIENT = (http.client.HTTPException, ConnectionError, TimeoutError)


class HttpSession:
    """One kept-alive connection per origin; follows redirects; never sends ``headers`` to another origin."""

    def __init__(
        self, headers: dict[str, str] | None = None, timeout: float = TIMEOUT, allow_insecure: bool = False
    ) -> None:
        self._headers = dict(headers or {})
        self._allow_insecure = allow_insecure
        self._timeout = timeout
        self._connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        self._tls = ssl.create_default_context()

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()

    def _connection(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"mirror: {url} is not an http(s) URL")
        if parts.scheme == "http" and not self._allow_insecure:
            raise SourceError(f"mirror: {url} is plain http, refused: use https, or set weights.allow_insecure: true")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        conn = self._connections.get(key)
        if conn is None:
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.hostname, port, timeout=self._timeout, context=self._tls)
            else:
                conn = http.client.HTTPConnection(parts.hostname, port, timeout=self._timeout)
            self._connections[key] = conn
        path = parts.path or "/"
        return conn, path + (f"?{parts.query}" if parts.query else "")

    def forget(self, url: str) -> None:
        """Close the connection to ``url``'s origin (after an error its state is unknown)."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        conn = self._connections.pop((parts.scheme, parts.hostname or "", port), None)
        if conn is not None:
            conn.close()

    def request(self, url: str, headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, str]:
        """GET ``url`` (following redirects); returns the open response and the URL that answered."""
        origin = urlsplit(url).netloc
        for _ in range(MAX_REDIRECTS + 1):
            conn, target = self._connection(url)
            sent = {"Accept-Encoding": "identity", **(headers or {})}
            if urlsplit(url).netloc == origin:
                sent.update(self._headers)
            try:
                conn.request("GET", target, headers=sent)
                response = conn.getresponse()
            except _TRANSIENT:
                self.forget(url)
                raise
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                response.read()
                location = urljoin(url, response.getheader("Location", ""))
                if urlsplit(location).scheme == "http" and not self._allow_insecure:
                    raise SourceError(f"mirror: {url} redirects to plain http ({location}), refused")
                url = location
                continue
            return response, url
        raise SourceError(f"mirror: more than {MAX_REDIRECTS} redirects from {url}")

    def get(self, url: str) -> tuple[int, bytes]:
        response, _ = self.request(url)
        return response.status, response.read()


def _segment_start(response: http.client.HTTPResponse) -> int | None:
    content_range = response.getheader("Content-Range", "")
    if not content_range.startswith("bytes "):
        return None
    try:
        return int(content_range[6:].split("-", 1)[0])
    except ValueError:
        return None


def ranged_download(session: HttpSession, url: str, target: PartialFile, progress: Progress, retries: int) -> int:
    """Append ``url``'s missing bytes to ``target`` segment by segment; returns the bytes received."""
    received = 0
    attempt = 0
    whole_body = False  # set when the server ignores Range: then one plain GET carries everything
    while target.offset < target.size:
        start = target.offset
        end = min(start + SEGMENT, target.size) - 1
        headers = {} if whole_body else {"Range": f"bytes={start}-{end}"}
        try:
            response, url = session.request(url, headers)
            if response.status == 200:
                if start:
                    target.restart()
                whole_body = True
            elif response.status == 206:
                if _segment_start(response) != start:
                    response.read()
                    raise SourceError(f"{target.rel}: {url} answered a Range request with another range")
            else:
                response.read()
                raise SourceError(f"{target.rel}: {url} answered HTTP {response.status}")
            while data := response.read(READ):
                target.write(data)
                received += len(data)
                progress.advance(target.rel, len(data))
            if whole_body and target.offset < target.size:
                raise http.client.IncompleteRead(b"", target.size - target.offset)
            if not whole_body and target.offset <= end:
                raise http.client.IncompleteRead(b"", end + 1 - target.offset)
            attempt = 0
        except _TRANSIENT as err:
            session.forget(url)
            # A failure after some progress starts a fresh count: only a stuck transfer runs out of retries.
            attempt = 1 if target.offset > start else attempt + 1
            if attempt > retries:
                raise SourceError(
                    f"{target.rel}: {url} keeps failing ({type(err).__name__}); re-run to resume"
                ) from None
            log.warning(
                "%s: %s at byte %d; resuming (attempt %d/%d)",
                target.rel,
                type(err).__name__,
                target.offset,
                attempt,
                retries,
            )
            time.sleep(min(0.2 * 2**attempt, 5.0))
    return received
