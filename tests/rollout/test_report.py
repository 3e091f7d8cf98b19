"""The report: JSON fields, the capacity series, and the self-contained HTML page."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

from ms4fleet.rollout.hoststate import HostRun, Phase
from ms4fleet.rollout.html import render_html
from ms4fleet.rollout.report import RolloutReport, capacity
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
    # Starts at the plot's top left (8 of 8... replicas at t=0), one step per capacity change.
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
