"""``ms4fleet status`` rendering and options, and ``ms4fleet monitoring``'s checks before any host is contacted."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from ms4fleet import monitoring
from ms4fleet_pyinfra.monitoring import register_monitoring
from ms4fleet_pyinfra.rollout.cli import register_status, status_table
from ms4fleet_pyinfra.rollout.status import HostStatus
from tests.rollout.test_cli import inventory


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ms4fleet")
    sub = parser.add_subparsers(dest="command", required=True)
    register_status(sub)
    register_monitoring(sub)
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def test_status_table_shows_each_replica_and_gpu() -> None:
    row = HostStatus("gpu-1", "rel-a", "fits", current="rel-a", units={"u0": "active", "u1": "active"})
    row.health = {8000: "ok", 8001: "unreachable (ConnectError)"}
    row.load = {
        8000: {"running": 3.0, "waiting": 1.0, "kv_cache_usage": 0.25, "tokens_per_s": 42.5},
        8001: {"error": "unreachable (ConnectError)"},
    }
    row.gpus = [{"index": 0, "memory_used_bytes": 3 << 30, "memory_total_bytes": 140 << 30, "health": "healthy"}]
    console = Console(width=200, record=True)
    console.print(status_table([row]))
    text = console.export_text()
    line = next(line for line in text.splitlines() if "8000" in line)
    assert [cell.strip() for cell in line.split("│")[5:10]] == ["3", "1", "25.0%", "42.5", "0: 3.0/140.0 GiB healthy"]
    assert "unreachable (ConnectError)" in next(line for line in text.splitlines() if "8001" in line)
    assert row.to_dict()["load"]["8000"]["tokens_per_s"] == 42.5


def test_status_refuses_a_bad_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli("status", str(inventory(tmp_path)), "--interval-s", "0")
    assert "'0' is not a number of seconds in (0, 3600]" in capsys.readouterr().err


def write_monitoring(tmp_path: Path, **settings: object) -> tuple[Path, Path]:
    gpus = inventory(tmp_path)
    text = gpus.read_text().replace("'ms4fleet_gpu'", f"'ms4fleet_monitoring': {settings!r}, 'ms4fleet_gpu'", 1)
    gpus.write_text(text)
    mon = tmp_path / "mon.py"
    mon.write_text('mon = [("mon-1", {"ssh_hostname": "192.0.2.99"})]\n')
    return gpus, mon


def test_monitoring_json_is_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gpus, mon = write_monitoring(tmp_path, prometheus_host="mon-1")
    assert cli("monitoring", str(gpus), "--monitoring-inventory", str(mon), "--json") == 0
    (plan,) = json.loads(capsys.readouterr().out)
    assert plan["host"] == "mon-1" and plan["scraped"] == ["gpu-1", "gpu-2"]
    targets = json.loads(plan["files"][f"{monitoring.TARGETS_DIR}/vllm.json"])
    # The host proxy's metrics listeners (port + 10000).
    assert [t["targets"] for t in targets] == [
        ["10.9.0.1:18000"],
        ["10.9.0.1:18001"],
        ["10.9.0.2:18000"],
        ["10.9.0.2:18001"],
    ]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prometheus_host": "mon-9"}, "gpu-1: monitoring.prometheus_host='mon-9' is not a host of"),
        ({"prometheus_host": "mon-1", "scrape_interval_s": 1}, "gpu-1: monitoring.scrape_interval_s"),
        ({}, "monitoring is set on no host"),
    ],
)
def test_bad_monitoring_is_one_line_before_any_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: dict[str, object], message: str
) -> None:
    gpus, mon = write_monitoring(tmp_path, **settings) if settings else (inventory(tmp_path), tmp_path / "mon.py")
    mon.write_text('mon = [("mon-1", {"ssh_hostname": "192.0.2.99"})]\n')
    assert cli("monitoring", str(gpus), "--monitoring-inventory", str(mon)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ms4fleet: error: ") and message in err[0], err


def _rows(running: float) -> list[HostStatus]:
    row = HostStatus("gpu-1", "rel-a", "fits", current="rel-a", units={"u0": "active"})
    row.health = {8000: "ok"}
    row.load = {8000: {"running": running, "waiting": 0.0, "kv_cache_usage": 0.5, "tokens_per_s": 10.0}}
    return [row]


def _reader(passes: list[float]) -> Any:
    """Rows with ``running`` = each of ``passes`` in turn, then Ctrl-C."""
    left = list(passes)

    def read() -> list[HostStatus]:
        if not left:
            raise KeyboardInterrupt
        return _rows(left.pop(0))

    return read


def test_status_watch_redraws_the_table_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ms4fleet_pyinfra.rollout import cli as rollout_cli
    from ms4fleet_pyinfra.rollout import status

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, record=True)
    read = _reader([3.0, 7.0])
    monkeypatch.setattr(status, "fleet_status", lambda fleet, interval_s: read())
    monkeypatch.setattr(rollout_cli, "Console", lambda *a, **k: console)
    assert cli("status", str(inventory(tmp_path)), "--watch", "--interval-s", "0.01") == 0
    text = console.export_text()
    # Both passes drawn (rich redraws the last once more as it stops), each a table row for the replica.
    cells = [[c.strip() for c in line.split("│")[5:7]] for line in text.splitlines() if "8000" in line]
    assert cells[0] == ["3", "0"] and cells[-1] == ["7", "0"] and {c[0] for c in cells} == {"3", "7"}
    assert "\x1b[" in out.getvalue()  # drawn with cursor movements, not appended


def test_status_watch_prints_lines_without_a_terminal() -> None:
    from ms4fleet_pyinfra.rollout.cli import watch_status

    console = Console(file=io.StringIO(), force_terminal=False, width=80, record=True)
    pauses: list[float] = []
    assert watch_status(_reader([3.0, 7.0]), console, 9.0, sleep=pauses.append) == 0
    lines = console.export_text().splitlines()
    assert pauses == [9.0, 9.0]
    assert [line for line in lines if line.startswith("status at ")] == lines[0::2]
    assert lines[1::2] == [
        "  gpu-1 8000: rel-a: ok; running 3, waiting 0, KV 50.0%, 10.0 tokens/s",
        "  gpu-1 8000: rel-a: ok; running 7, waiting 0, KV 50.0%, 10.0 tokens/s",
    ]
