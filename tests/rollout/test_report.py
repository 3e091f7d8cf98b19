"""The report: JSON fields, the capacity series, and the self-contained HTML page."""

from __future__ import annotations

import json
import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ms4fleet.rollout.hoststate import HostRun, Phase
from ms4fleet.rollout.html import render_html
from ms4fleet.rollout.report import ReportWriter, RolloutReport, capacity
from ms4fleet.rollout.waves import Policy, WaveSize, plan_waves

HAPPY = [Phase.PRESTAGED, Phase.DRAINED, Phase.STOPPED, Phase.STARTED, Phase.VERIFIED, Phase.REJOINED]


def run(name: str, phases: list[tuple[Phase, float]], replicas: int = 2) -> HostRun:
    host = HostRun(name, replicas, before="aaaa", target="bbbb")
    for phase, t in phases:
        host.advance(phase, t)
    return host


def sample() -> RolloutReport:
    hosts = ["gpu-1", "gpu-2", "gpu-3"]
    plan = plan_waves(hosts, set(hosts), Policy(canary=1, wave=WaveSize.parse("2"), max_unavailable=1))
    canary = run("gpu-1", [(p, t) for p, t in zip(HAPPY, [1, 2, 3, 5, 6, 7], strict=True)])
    failed = run("gpu-2", [(Phase.PRESTAGED, 8), (Phase.DRAINED, 9), (Phase.STOPPED, 10), (Phase.STARTED, 12)])
    failed.advance(Phase.ROLLING_BACK, 13, "verify: replica 0 (port 8000) failed: completion: <EngineDeadError>")
    failed.advance(Phase.ROLLED_BACK, 16)
    failed.causes = [
        {"id": "engine-dead", "title": "the engine process died", "fix": "read the log", "evidence": "<x>"}
    ]
    failed.verification = [{"replica": 0, "port": 8000, "ok": False, "failed": ["completion: EngineDeadError"]}]
    untouched = HostRun("gpu-3", 2, before="aaaa", target="bbbb")
    untouched.advance(Phase.PRESTAGED, 8)
    return RolloutReport(
        "inv.py", "pyinfra", "2026-11-29T10:00:00Z", plan, [canary, failed, untouched], 17.0, "gpu-2 ended rolled-back"
    )


def test_capacity_steps_down_during_each_switch() -> None:
    report = sample()
    assert capacity(report.runs, 17.0) == [(0.0, 6), (2.0, 4), (7.0, 6), (9.0, 4), (16.0, 6), (17.0, 6)]


def test_json_names_outcome_cause_and_releases() -> None:
    data = json.loads(sample().to_json())
    assert data["outcome"] == "stopped" and data["exit_code"] == 1
    assert data["causes"] == [
        {
            "host": "gpu-2",
            "id": "engine-dead",
            "title": "the engine process died",
            "fix": "read the log",
            "evidence": "<x>",
        }
    ]
    by_host = {h["host"]: h for h in data["hosts"]}
    assert (by_host["gpu-1"]["before"], by_host["gpu-1"]["after"]) == ("aaaa", "bbbb")
    assert (by_host["gpu-2"]["phase"], by_host["gpu-2"]["after"]) == ("rolled-back", "aaaa")
    assert by_host["gpu-3"]["phase"] == "prestaged" and by_host["gpu-3"]["after"] == "aaaa"
    assert by_host["gpu-1"]["gap_s"] == 5.0
    assert data["capacity"]["total_replicas"] == 6
    assert data["plan"]["waves"][0] == {"index": 0, "kind": "canary", "hosts": ["gpu-1"], "batches": [["gpu-1"]]}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained_with_an_svg_chart(tmp_path: Path) -> None:
    json_path, html_path = sample().write(tmp_path / "out")
    assert json.loads(json_path.read_text())["exit_code"] == 1
    page = html_path.read_text()
    parser = _Collector()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert "svg" in tags and "path" in tags
    assert "script" not in tags and "link" not in tags and "img" not in tags
    # No URL other than the SVG namespace: nothing is fetched when the page opens.
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}
    step_path = next(a["d"] for t, a in parser.tags if t == "path" and a.get("class") == "capacity-line")
    # Starts at the plot's top left (all 6 replicas at t=0), one step per capacity change.
    assert step_path is not None and step_path.startswith("M64.0,30.0") and step_path.count("V") == 5
    # Text from hosts is escaped, not interpreted.
    assert "&lt;EngineDeadError&gt;" in page and "<EngineDeadError>" not in page
    assert "engine-dead" in page and "rolled-back" in page


def test_no_op_report() -> None:
    hosts = ["gpu-1", "gpu-2"]
    plan = plan_waves(hosts, set(), Policy())
    runs = [HostRun(h, 1, before="aaaa", target="aaaa") for h in hosts]
    for r in runs:
        r.advance(Phase.UNCHANGED, 0.5)
    report = RolloutReport("inv.py", "pyinfra", "t", plan, runs, 1.0)
    assert (report.outcome, report.exit_code) == ("no-op", 0)
    assert "every host already runs the release" in render_html(report.to_dict())


def test_waves_and_the_policys_minimum_are_in_the_report() -> None:
    cap = sample().to_dict()["capacity"]
    # 3 hosts, max unavailable 1: 2 hosts (4 replicas) always serve. gpu-3 of wave 1 is not done: its band
    # runs to the report's end.
    assert (cap["floor_hosts"], cap["floor_replicas"]) == (2, 4)
    assert cap["waves"] == [
        {"index": 0, "kind": "canary", "hosts": ["gpu-1"], "start": 1.0, "end": 7.0},
        {"index": 1, "kind": "wave", "hosts": ["gpu-2", "gpu-3"], "start": 8.0, "end": 17.0},
    ]


def _dom(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Collector()
    parser.feed(page)
    return parser.tags


def test_html_has_a_timeline_row_per_host_a_band_per_wave_and_the_minimum_line() -> None:
    report = sample().to_dict()
    tags = _dom(render_html(report))
    classes = [(t, (a.get("class") or "").split(), a) for t, a in tags]
    rows = [a["data-host"] for t, c, a in classes if "timeline-row" in c]
    assert rows == ["gpu-1", "gpu-2", "gpu-3"]
    bands = [(a["data-wave"], a["data-kind"]) for t, c, a in classes if "wave-band" in c]
    assert bands == [("0", "canary"), ("1", "wave")]
    minimum = next(a for t, a in tags if a.get("id") == "min-capacity")
    step = next(a["d"] for t, c, a in classes if "capacity-line" in c)
    assert step is not None
    # The dashed line sits at 4 of 6 replicas, where the step line's dips go (y of 4 = the dips' V value).
    assert f"V{minimum['y1']}" in step
    # The canary's spans, in order, on its row.
    spans = [c[1] for t, c, a in classes if t == "rect" and c and c[0] == "seg"]
    assert spans[:4] == ["seg-draining", "seg-restarting", "seg-verifying", "seg-rejoining"]
    assert "seg-rollback" in spans


def test_a_long_host_name_is_cut_on_its_row_and_whole_in_its_title() -> None:
    report = sample()
    report.runs[0].name = "gpu-" + "x" * 60
    page = render_html(report.to_dict())
    assert f"<title>gpu-{'x' * 60}: rejoined</title>" in page
    assert f">gpu-{'x' * 27}\u2026</text>" in page


def test_the_report_reads_back_from_a_sim_rollouts_json(tmp_path: Path) -> None:
    """A report the sim's rollout wrote (tests/rollout/test_sim_rollout.py) rebuilds into the same report."""
    data = json.loads((Path(__file__).parents[1] / "data" / "report" / "sim-rollout-complete.json").read_text())
    again = RolloutReport.from_dict(data).to_dict()
    assert again["outcome"] == data["outcome"] == "complete"
    assert again["capacity"]["points"] == data["capacity"]["points"]
    assert [h["history"] for h in again["hosts"]] == [h["history"] for h in data["hosts"]]
    assert [w["kind"] for w in again["capacity"]["waves"]] == ["canary", "wave", "wave"]


def test_the_writer_rewrites_the_report_after_every_step(tmp_path: Path) -> None:
    report = sample()
    gpu3 = report.runs[2]
    # A clock that stands still: writes take no time, so none is paced.
    writer = ReportWriter(tmp_path, lambda: report, clock=lambda: 0.0)
    for phase, t in [(Phase.DRAINED, 18.0), (Phase.STOPPED, 19.0)]:
        gpu3.advance(phase, t)
        writer(gpu3, phase)
        data = json.loads((tmp_path / "rollout.json").read_text())
        assert data["hosts"][2]["phase"] == str(phase)
        assert f'data-phase="{phase}"' in (tmp_path / "rollout.html").read_text()
    assert writer.writes == 2 and writer.error is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rollout.html", "rollout.json"]


def test_a_step_right_after_a_write_is_written_when_its_pace_allows(tmp_path: Path) -> None:
    """drained then stopped at once: the stop is written by the timer, not left stale through the model load."""
    report = sample()
    gpu3 = report.runs[2]
    writer = ReportWriter(tmp_path, lambda: report)
    for phase, t in [(Phase.DRAINED, 18.0), (Phase.STOPPED, 18.1)]:
        gpu3.advance(phase, t)
        writer(gpu3, phase)
    assert json.loads((tmp_path / "rollout.json").read_text())["hosts"][2]["phase"] == "drained"
    deadline = time.monotonic() + 10
    while writer.writes < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert json.loads((tmp_path / "rollout.json").read_text())["hosts"][2]["phase"] == "stopped"
    writer.close()


def test_no_timer_writes_after_close(tmp_path: Path) -> None:
    """The final report (with its stop line) is written after close(): a paced write must not replace it."""
    now = [0.0]
    report = sample()

    def build() -> RolloutReport:
        now[0] += 0.5
        return report

    writer = ReportWriter(tmp_path, build, clock=lambda: now[0])
    writer(report.runs[2], Phase.PRESTAGED)
    writer(report.runs[2], Phase.PRESTAGED)  # paced: a timer is due in 2 s
    writer.close()
    time.sleep(2.2)
    assert writer.writes == 1


def test_an_interrupted_write_leaves_the_last_report_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = sample()
    report.write(tmp_path)
    before = (tmp_path / "rollout.json").read_bytes()

    def interrupted(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    report.runs[2].advance(Phase.DRAINED, 18.0)
    with pytest.raises(KeyboardInterrupt):
        report.write(tmp_path)
    assert (tmp_path / "rollout.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rollout.html", "rollout.json"]


def test_nothing_is_written_before_there_is_a_report(tmp_path: Path) -> None:
    writer = ReportWriter(tmp_path / "r", lambda: None)
    writer(sample().runs[0], Phase.UNCHANGED)
    assert writer.writes == 0 and not (tmp_path / "r").exists()


def test_a_write_that_fails_mid_rollout_is_kept_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    writer = ReportWriter(blocker, sample)
    writer(sample().runs[0], Phase.REJOINED)
    assert isinstance(writer.error, OSError) and writer.writes == 0
