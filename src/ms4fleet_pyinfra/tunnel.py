"""A local TCP port forwarded to ``<address>:<port>`` on a host through pyinfra's own SSH connection.

vLLM replicas bind the host's loopback (or the configured ``serving.bind_address``), so the controller
reaches them through the connection it already holds (paramiko ``direct-tcpip``): no extra SSH process, no
port opened on the host, and the core's ``verify`` (httpx) runs unchanged on the controller. ``@local`` hosts
are reached directly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any


def _pump(source: Any, sink: Any) -> None:
    with contextlib.suppress(OSError, EOFError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError, EOFError):
        sink.close()


def _serve(listener: socket.socket, transport: Any, address: str, port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            client, peer = listener.accept()
        except OSError:
            return
        try:
            channel = transport.open_channel("direct-tcpip", (address, port), peer)
        except Exception:  # paramiko raises ChannelException and SSHException alike: the port is closed
            client.close()
            continue
        threading.Thread(target=_pump, args=(client, channel), daemon=True).start()
        threading.Thread(target=_pump, args=(channel, client), daemon=True).start()


@contextlib.contextmanager
def forwarded(host: Any, port: int, address: str) -> Iterator[str]:
    """Yield a base URL (``http://127.0.0.1:<local port>``) that reaches ``address:port`` on ``host``
    (the replica's address in the host plan: ``serving.local_address``)."""
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None else None
    if transport is None:
        yield f"http://{f'[{address}]' if ':' in address else address}:{port}"
        return
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(listener, transport, address, port, stop), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
