"""SSH to sim hosts with paramiko, the way pyinfra's @ssh connector reaches them."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko


@dataclass(frozen=True)
class Endpoint:
    """How to reach one sim host from the machine."""

    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    address: str = "127.0.0.1"


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str


def connect(endpoint: Endpoint, timeout: float = 10.0) -> paramiko.SSHClient:
    """Connect with the fleet key, checking the host key against the fleet's known_hosts (strict)."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(endpoint.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        endpoint.address,
        port=endpoint.port,
        username=endpoint.user,
        key_filename=str(endpoint.key_file),
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
        look_for_keys=False,
        allow_agent=False,
    )
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 600.0) -> Result:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode(errors="replace")
    err = stderr.read().decode(errors="replace")
    return Result(stdout.channel.recv_exit_status(), out, err)


def banner_ready(port: int, address: str = "127.0.0.1") -> bool:
    """Whether sshd answers with its banner (docker's port proxy accepts connections before sshd runs)."""
    try:
        with socket.create_connection((address, port), timeout=2.0) as sock:
            sock.settimeout(2.0)
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


def wait_until_ready(endpoint: Endpoint, timeout: float = 120.0) -> str:
    """Wait until SSH answers and systemd finished booting; return ``systemctl is-system-running``."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if not banner_ready(endpoint.port, endpoint.address):
            last_error = "no SSH banner yet"
            time.sleep(0.3)
            continue
        try:
            client = connect(endpoint, timeout=5.0)
        except (OSError, paramiko.SSHException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.3)
            continue
        try:
            remaining = max(5.0, deadline - time.monotonic())
            result = run(client, "timeout 110 systemctl is-system-running --wait", timeout=remaining)
            return result.stdout.strip() or result.stderr.strip()
        finally:
            client.close()
    raise TimeoutError(
        f"{endpoint.host}: SSH on 127.0.0.1:{endpoint.port} not ready after {timeout:.0f}s ({last_error})"
    )
