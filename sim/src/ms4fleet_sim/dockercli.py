"""A thin typed wrapper over the ``docker`` CLI (the sim drives the machine's dockerd through it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

LABEL = "io.ms4fleet.sim"
FLEET_LABEL = "io.ms4fleet.sim.fleet"
RECIPE_LABEL = "io.ms4fleet.sim.recipe"


class DockerError(RuntimeError):
    """A docker command failed; the message carries its stderr."""


def docker_binary() -> str:
    path = shutil.which("docker")
    if path is None:
        raise DockerError("docker CLI not found: run scripts/ensure-docker.sh (installs docker.io, starts dockerd)")
    return path


def run(
    args: Sequence[str],
    *,
    input_bytes: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``docker ARGS``; on failure raise DockerError with the command's stderr."""
    proc = subprocess.run(
        [docker_binary(), *args], input=input_bytes, capture_output=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        raise DockerError(f"docker {' '.join(args[:3])}: {err}")
    return proc


def out(args: Sequence[str], *, timeout: float | None = None) -> str:
    return run(args, timeout=timeout).stdout.decode().strip()


def daemon_ok() -> bool:
    try:
        return run(["version", "--format", "{{.Server.Version}}"], check=False, timeout=30).returncode == 0
    except (DockerError, subprocess.TimeoutExpired):
        return False


def image_exists(ref: str) -> bool:
    return run(["image", "inspect", ref], check=False).returncode == 0


def inspect(kind: str, name: str) -> dict[str, Any] | None:
    proc = run([kind, "inspect", name], check=False)
    if proc.returncode != 0:
        return None
    data: list[dict[str, Any]] = json.loads(proc.stdout)
    return data[0] if data else None


def list_ids(kind: str, label: str) -> list[str]:
    """Ids of containers (all states), networks or volumes carrying ``label``."""
    if kind == "container":
        args = ["ps", "-aq", "--filter", f"label={label}"]
    elif kind == "network":
        args = ["network", "ls", "-q", "--filter", f"label={label}"]
    else:
        args = ["volume", "ls", "-q", "--filter", f"label={label}"]
    return [line for line in out(args).splitlines() if line]


def exec_in(
    container: str,
    command: Sequence[str],
    *,
    input_bytes: bytes | None = None,
    user: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    args = ["exec", "-i"] if input_bytes is not None else ["exec"]
    if user:
        args += ["--user", user]
    return run([*args, container, *command], input_bytes=input_bytes, check=check)


def pipe(producer: Sequence[str], consumer: Sequence[str]) -> None:
    """``docker PRODUCER | docker CONSUMER`` without holding the stream in memory (image save/load)."""
    binary = docker_binary()
    with subprocess.Popen([binary, *producer], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as src:
        assert src.stdout is not None
        dst = subprocess.run([binary, *consumer], stdin=src.stdout, capture_output=True, check=False)
        src.stdout.close()
        src_err = src.stderr.read().decode(errors="replace") if src.stderr else ""
        src.wait()
    if src.returncode != 0:
        raise DockerError(f"docker {' '.join(producer[:2])}: {src_err.strip()}")
    if dst.returncode != 0:
        raise DockerError(f"docker {' '.join(consumer[:3])}: {dst.stderr.decode(errors='replace').strip()}")
