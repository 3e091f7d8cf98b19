"""The corpus of hostile or mistaken VALUES (tests/data/bad_inventories/values/), each through the real
``ms4fleet plan`` (its ``main``; a sample also in fresh interpreters): exit 2, exactly one stderr line naming the host and the field,
no traceback, never the secret. ``good-*`` inventories must still plan.

Each file says what it expects on its first line: ``# expect: <host> <field>`` (or ``# expect: ok``), and
``# secret: <value>`` when it holds one that must never be printed.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from ms4fleet import cli
from ms4fleet.config import HostConfig
from ms4fleet.serving import plan_host
from tests.support.systemd_syntax import environment, unit_lines

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_inventories" / "values"
FILES = sorted(p for p in CORPUS.iterdir() if p.suffix in {".py", ".yml"})


def _header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if not line.startswith("# ") or ": " not in line:
            break
        key, _, value = line[2:].partition(": ")
        out[key] = value
    return out


@dataclass(frozen=True)
class Planned:
    returncode: int
    stdout: str
    stderr: str


def _plan_in_process(path: Path) -> Planned:
    """The CLI's own entry point (``main``), its streams captured: what ``ms4fleet plan FILE`` prints and
    returns. An exception that escapes ``main`` fails the test here as a traceback would fail it in a shell."""
    # Real text streams over bytes: Ansible's inventory code reconfigures the process's streams on import.
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        returncode = cli.main(["plan", str(path)])
    return Planned(returncode, _text(out), _text(err))


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    return stream.buffer.getvalue().decode()  # type: ignore[attr-defined]


@cache
def _results() -> dict[Path, Planned]:
    # In this interpreter: 190 fresh interpreters cost three minutes of a 2-core CI machine, and
    # test_a_fresh_interpreter_prints_the_same proves a real process says exactly the same.
    return {path: _plan_in_process(path) for path in FILES}


def test_a_fresh_interpreter_prints_the_same() -> None:
    """A sample of the corpus through ``python -m ms4fleet.cli plan`` in new processes: byte for byte what
    the in-process run printed (one .py and one .yml refusal, a secret given by value, a good file)."""
    bad = [p for p in FILES if _header(p)["expect"] != "ok"]
    sample = [
        next(p for p in bad if p.suffix == ".py"),
        next(p for p in bad if p.suffix == ".yml"),
        next(p for p in bad if "secret" in _header(p)),
        next(p for p in FILES if _header(p)["expect"] == "ok"),
    ]

    def plan(path: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "ms4fleet.cli", "plan", str(path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for path, done in zip(sample, pool.map(plan, sample), strict=True):
            assert Planned(done.returncode, done.stdout, done.stderr) == _results()[path], path.name


def test_the_corpus_covers_both_formats() -> None:
    bad = [p for p in FILES if _header(p)["expect"] != "ok"]
    assert len(bad) >= 55
    assert {p.suffix for p in bad} == {".py", ".yml"}
    assert all("expect" in _header(p) for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_inventory(path: Path) -> None:
    header = _header(path)
    done = _results()[path]
    if header["expect"] == "ok":
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return
    host, field = header["expect"].split(" ", 1)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert done.stderr.endswith("\n") and "\r" not in done.stderr
    assert lines[0].startswith(f"ms4fleet: error: {host}: {field}"), lines[0]
    assert lines[0].isprintable(), lines[0]
    secret = header.get("secret")
    if secret:
        assert secret not in done.stderr and secret[3:] not in done.stderr
    if field in {"serving.api_key", "weights.hf_token"}:
        assert "given by value" in lines[0]


def test_nccl_debug_file_reaches_the_process_unchanged() -> None:
    """NCCL's own %h/%p placeholders must not be eaten by systemd's specifiers."""
    config = HostConfig.from_host_data(
        "gpu-ok",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"env": {"NCCL_DEBUG_FILE": "/var/log/nccl.%h.%p.log"}},
        },
    )
    unit = plan_host(config).replicas[0].unit_text
    assert "Environment=NCCL_DEBUG_FILE=/var/log/nccl.%%h.%%p.log\n" in unit
    env: dict[str, str] = {}
    for _, key, value in unit_lines(unit):
        if key == "Environment":
            env |= environment(value)
    assert env["NCCL_DEBUG_FILE"] == "/var/log/nccl.%h.%p.log"
