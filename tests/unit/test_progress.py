"""Transfer progress: the overall figures (bytes, rate, ETA), the periodic lines written without a terminal, the
live bars with one, and rsync's own progress read as it comes (a real local rsync, throttled)."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from ms4fleet.progress import GIB, LineView, Tracker, tracker_for
from ms4fleet.weights.stage import BWLIMIT, run_rsync


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_every_n_seconds_and_every_gib_with_rate_and_eta() -> None:
    clock, lines = Clock(), list[str]()
    tracker = Tracker(LineView(lines.append, "stage to 2 host(s)", "host", every_s=10, clock=clock), clock=clock)
    tracker.row("gpu-1", 4 * GIB)
    tracker.row("gpu-2", 4 * GIB)
    clock.now += 5
    tracker.moved("gpu-1", GIB // 2)
    assert lines == []  # neither 10 s nor a GiB yet
    clock.now += 5
    tracker.moved("gpu-2", GIB // 2)
    assert lines == ["stage to 2 host(s): 1.0 GiB of 8.0 GiB (12%), 102.4 MiB/s, ETA 1m10s; 0 of 2 hosts done"]
    clock.now += 1
    tracker.moved("gpu-1", GIB)  # 1.5 GiB moved in all: no new GiB boundary, 1 s since the last line
    assert len(lines) == 1
    tracker.moved("gpu-2", GIB + GIB // 2)  # 2.5 GiB moved: the 2 GiB boundary is crossed
    assert len(lines) == 2 and lines[1].startswith("stage to 2 host(s): 2.5 GiB of 8.0 GiB (31%)")
    tracker.moved("gpu-1", 4 * GIB)
    tracker.done("gpu-1")
    assert lines[-1].endswith("1 of 2 hosts done (finished: gpu-1)")
    assert not any("\r" in line or "\x1b" in line for line in lines)


def test_a_rows_better_total_replaces_the_guess() -> None:
    """rsync tells how much this host lacks (bytes / percent): the overall total follows it, so a host that
    already holds most files does not leave the bar stuck far from its end."""
    clock, lines = Clock(), list[str]()
    tracker = Tracker(LineView(lines.append, "copy", "host", every_s=0, clock=clock), clock=clock)
    tracker.row("gpu-1", 100 * GIB)
    clock.now += 10
    tracker.moved("gpu-1", GIB, total=4 * GIB)
    assert lines[-1].startswith("copy: 1.0 GiB of 4.0 GiB (25%), 102.4 MiB/s, ETA 30s;")


def test_an_expected_total_and_per_file_rows_give_the_fetch_eta() -> None:
    clock, lines = Clock(), list[str]()
    tracker = Tracker(LineView(lines.append, "weights fetch", every_s=0, clock=clock), clock=clock)
    tracker.expect(3 * GIB)
    tracker.start("a.safetensors", 2 * GIB, GIB // 2)  # resumed: half a GiB was already there
    clock.now += 2
    tracker.advance("a.safetensors", GIB)
    assert lines == ["weights fetch: 1.0 GiB of 3.0 GiB (33%), 512.0 MiB/s, ETA 4s; 0 of 1 files done"]


def test_without_a_terminal_the_tracker_prints_plain_lines() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=40)  # narrower than a line: it must not wrap
    with tracker_for(console, "weights fetch") as tracker:
        tracker.start("a", 10, 0)
        tracker.advance("a", 10)
        tracker.finish("a")
    text = out.getvalue()
    assert text.startswith("weights fetch: 10 B of 10 B (100%)") and "(finished: a)" in text
    assert "\x1b" not in text


def test_on_a_terminal_the_overall_row_comes_first_with_an_eta() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with tracker_for(console, "stage to 3 host(s)", unit="host") as tracker:
        tracker.row("gpu-1", 1000)
        tracker.moved("gpu-1", 400)
    drawn = out.getvalue()
    assert "stage to 3 host(s)" in drawn and "gpu-1" in drawn and "ETA" in drawn
    assert drawn.index("stage to 3 host(s)") < drawn.index("gpu-1")


def test_rsync_progress_is_read_as_it_comes(tmp_path: Path) -> None:
    source, dest = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    (source / "shard").write_bytes(os.urandom(3 * 1024 * 1024))
    updates: list[tuple[int, int]] = []
    argv = ["rsync", "--recursive", "--info=progress2", "--bwlimit=1M", "--stats", f"{source}/", f"{dest}/"]
    code, stdout, stderr = run_rsync(argv, 60, lambda moved, pct: updates.append((moved, pct)))
    assert code == 0, stderr
    assert "Literal data:" in stdout  # the stats the outcome's bytes_sent comes from are still there
    assert len(updates) >= 3, updates  # a throttled 3 MiB copy reports several times, not once at its end
    assert [moved for moved, _ in updates] == sorted(moved for moved, _ in updates)
    assert updates[-1] == (3 * 1024 * 1024, 100)
    assert (dest / "shard").read_bytes() == (source / "shard").read_bytes()


def test_rsync_past_its_time_is_killed_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big").write_bytes(b"x" * 2 * 1024 * 1024)
    argv = ["rsync", "--bwlimit=100K", f"{tmp_path / 'src'}/", f"{tmp_path / 'dst'}/", "--recursive"]
    with pytest.raises(subprocess.TimeoutExpired):
        run_rsync(argv, 1, None)


def test_bandwidth_limits_are_rsyncs_syntax_only() -> None:
    assert all(BWLIMIT.match(v) for v in ("200M", "1.5G", "51200", "800K"))
    assert not any(BWLIMIT.match(v) for v in ("0", "-1M", "200MB", "1M; rm -rf /", "", " 1M", "1M\n"))


def test_a_hub_download_reports_its_bytes_while_they_land(tmp_path: Path) -> None:
    """huggingface_hub says nothing until a file is whole: the watcher measures its growing .incomplete file."""
    import time

    from huggingface_hub._local_folder import get_local_download_paths

    from ms4fleet.weights import hub

    seen: list[int] = []

    class Record:
        def advance(self, path: str, nbytes: int) -> None:
            seen.append(nbytes)

    incomplete = get_local_download_paths(tmp_path, "sub/a.safetensors").incomplete_path("e7ag")
    with hub._watched(tmp_path, "sub/a.safetensors", Record()) as reported:  # type: ignore[arg-type]
        for size in (1000, 5000):
            incomplete.write_bytes(b"x" * size)
            deadline = time.monotonic() + 5
            while reported[0] != size and time.monotonic() < deadline:
                time.sleep(0.05)
    assert seen == [1000, 4000] and reported == [5000]
