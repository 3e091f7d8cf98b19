"""The rollout's live view: the table a terminal shows and the periodic lines a log gets, driven with fake steps."""

from __future__ import annotations

import io
import time

from rich.console import Console

from ms4fleet.rollout.hoststate import HostRun, Phase
from ms4fleet.rollout.live import RolloutBoard, board_view
from ms4fleet.rollout.waves import Policy, WaveSize, plan_waves

HOSTS = ["gpu-1", "gpu-2", "gpu-3"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def board(max_rows: int = 24) -> tuple[RolloutBoard, dict[str, HostRun], Clock]:
    runs = {name: HostRun(name, 2) for name in HOSTS}
    plan = plan_waves(HOSTS, set(HOSTS), Policy(canary=1, wave=WaveSize.parse("2"), max_unavailable=1))
    clock = Clock()
    return RolloutBoard(runs, lambda: plan, clock, max_rows=max_rows), runs, clock


def rendered(b: RolloutBoard) -> list[list[str]]:
    console = Console(file=io.StringIO(), force_terminal=True, width=100, record=True)
    console.print(b.view())
    lines = console.export_text().splitlines()
    assert lines[0].startswith("rollout ")
    # The header's row is drawn with heavy bars (┃): only the hosts' rows split on the light one.
    return [[lines[0]]] + [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]


def test_the_table_shows_phase_time_in_it_wave_and_replicas_in_service() -> None:
    b, runs, clock = board()
    for phase, t in [(Phase.PRESTAGED, 1.0), (Phase.DRAINED, 2.0), (Phase.STOPPED, 3.0), (Phase.STARTED, 70.0)]:
        runs["gpu-1"].advance(phase, t)
    clock.now = 95.0
    title, *rows = rendered(b)
    assert title == ["rollout 1m35s: wave 1/2, 4 of 6 replicas in service"]
    assert rows == [
        ["gpu-1", "started", "25s", "1/2", "0/2"],
        ["gpu-2", "pending", "1m35s", "2/2", "2/2"],
        ["gpu-3", "pending", "1m35s", "2/2", "2/2"],
    ]
    for phase, t in [(Phase.VERIFIED, 96.0), (Phase.REJOINED, 97.0)]:
        runs["gpu-1"].advance(phase, t)
    runs["gpu-2"].advance(Phase.PRESTAGED, 98.0)
    runs["gpu-2"].advance(Phase.DRAINED, 99.0)
    clock.now = 100.0
    title, first, second, _ = rendered(b)
    assert title == ["rollout 1m40s: wave 2/2, 4 of 6 replicas in service"]
    assert first == ["gpu-1", "rejoined", "at 1m37s", "1/2", "2/2"]
    assert second == ["gpu-2", "drained", "1s", "2/2", "0/2"]
    assert b.line() == "rollout 1m40s: wave 2/2, 4 of 6 replicas in service; gpu-2 drained for 1s"


def test_a_large_fleet_keeps_the_hosts_mid_switch_and_counts_the_rest() -> None:
    b, runs, clock = board(max_rows=1)
    runs["gpu-3"].advance(Phase.PRESTAGED, 1.0)
    clock.now = 5.0
    _, busy, rest = rendered(b)
    assert busy == ["gpu-3", "prestaged", "4s", "2/2", "2/2"]
    assert rest == ["2 more", "2 pending", "", "", ""]


def test_without_a_terminal_a_line_comes_periodically_while_a_host_is_mid_switch() -> None:
    b, runs, clock = board()
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=60)
    with board_view(console, b, every_s=0.02):
        time.sleep(0.1)  # every host pending: nothing to report
        assert out.getvalue() == ""
        runs["gpu-1"].advance(Phase.PRESTAGED, 0.0)
        clock.now = 12.0
        time.sleep(0.1)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2
    # One plain line each (no escape codes, not wrapped at the console's 60 columns).
    assert set(lines) == {"rollout 12s: wave 1/2, 6 of 6 replicas in service; gpu-1 prestaged for 12s"}


def test_on_a_terminal_the_table_is_drawn_live() -> None:
    b, runs, clock = board()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with board_view(console, b):
        runs["gpu-1"].advance(Phase.PRESTAGED, 0.0)
        clock.now = 3.0
    text = out.getvalue()
    assert "\x1b[?25l" in text  # rich hides the cursor while it redraws in place
    assert "gpu-1" in text and "prestaged" in text and "wave 1/2" in text
