"""The rollout report and the plan page in a real browser: headless Chromium loads each file, its DOM after
load is checked (timeline rows, wave bands, the minimum line, a bar per GPU) and its screenshot must be a
picture, not a blank page. ``python -m tests.report.test_screenshots docs/img`` rewrites the docs' images.

Chromium is ``chromium-headless-shell`` (Debian's package; scripts/ensure-docker.sh installs it) or ``chromium``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ms4fleet.cli import main
from ms4fleet.rollout.report import RolloutReport

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SIM_REPORT = ROOT / "tests" / "data" / "report" / "sim-rollout-complete.json"
EXAMPLE = ROOT / "inventory" / "example.py"
BROWSERS = ("chromium-headless-shell", "chromium")
REPORT_SIZE, PLAN_SIZE, DOCS_PLAN_SIZE = (1100, 1150), (1100, 2400), (1100, 760)


def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.fail("no headless Chromium: run scripts/ensure-docker.sh (apt-get install chromium-headless-shell)")
    return found


def chromium(page: Path, *args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        # --no-sandbox: CI runs as root, which Chromium's sandbox refuses. A profile of its own per run, so
        # parallel tests do not share one.
        done = subprocess.run(
            [browser(), "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
             *args, page.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(page: Path, png: Path, size: tuple[int, int]) -> None:
    chromium(page, f"--window-size={size[0]},{size[1]}", f"--screenshot={png}")


class Dom(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def having(self, css: str) -> list[dict[str, str]]:
        return [a for _, a in self.tags if css in a.get("class", "").split()]


def png_pixels(path: Path, rows: int = 600) -> tuple[int, int, Counter[bytes]]:
    """Width, height and a count of each colour in the first ``rows`` rows of an 8-bit RGB(A) PNG (what
    Chromium writes), stdlib only (a row's filter needs the row above: a pure-Python decode of the whole
    page would take seconds)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0) and colour in (2, 6)
    step = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * step
    colours: Counter[bytes] = Counter()
    previous = bytearray(stride)
    for row in range(min(height, rows)):
        at = row * (stride + 1)
        kind, line = raw[at], bytearray(raw[at + 1 : at + 1 + stride])
        for i in range(stride):
            a = line[i - step] if i >= step else 0
            b = previous[i]
            c = previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if row % 4 == 0:  # every 4th row is plenty to tell a chart from a blank page
            colours.update(bytes(line[i : i + 3]) for i in range(0, stride, step))
        previous = line
    return width, height, colours


def assert_a_picture(png: Path, size: tuple[int, int]) -> None:
    width, height, colours = png_pixels(png)
    assert (width, height) == size
    background = colours.most_common(1)[0][1] / sum(colours.values())
    # Text, charts and their colours: many distinct colours, and the page's background not all of it.
    assert len(colours) > 50 and background < 0.95, (len(colours), background)


def rollout_page(directory: Path) -> Path:
    """The report of a real sim rollout (tests/rollout/test_sim_rollout.py's, kept as JSON), rendered by
    today's code."""
    report = RolloutReport.from_dict(json.loads(SIM_REPORT.read_text(encoding="utf-8")))
    return report.write(directory)[1]


def plan_page(path: Path, *limit: str) -> Path:
    args = [arg for host in limit for arg in ("--limit", host)]
    # Relative, as a reader would type it: the page names the inventory it was planned from.
    assert main(["plan", os.path.relpath(EXAMPLE), *args, "--html", str(path)]) == 0
    return path


def test_the_rollout_report_in_chromium(tmp_path: Path) -> None:
    page = rollout_page(tmp_path / "report")
    data = json.loads((tmp_path / "report" / "rollout.json").read_text())
    dom = Dom(chromium(page, "--dump-dom"))
    rows = [a["data-host"] for a in dom.having("timeline-row")]
    assert rows == [h["host"] for h in data["hosts"]] == ["rollout-1", "rollout-2", "rollout-3", "rollout-4"]
    bands = [(a["data-wave"], a["data-kind"]) for a in dom.having("wave-band")]
    assert (
        bands
        == [("0", "canary"), ("1", "wave"), ("2", "wave")]
        == [(str(w["index"]), w["kind"]) for w in data["plan"]["waves"]]
    )
    assert len(dom.having("min-capacity")) == 1 and len(dom.having("capacity-line")) == 1
    # Each host that switched shows its four spans and its six step marks.
    assert len(dom.having("seg")) == 4 * 4 and len(dom.having("mark")) == 4 * 6
    png = tmp_path / "report.png"
    screenshot(page, png, REPORT_SIZE)
    assert_a_picture(png, REPORT_SIZE)


def test_the_plan_page_in_chromium(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = plan_page(tmp_path / "plan.html")
    assert "plan: wrote" in capsys.readouterr().err
    assert main(["plan", str(EXAMPLE), "--json"]) == 0
    planned = {h["host"]: h["sizing"] for h in json.loads(capsys.readouterr().out)["hosts"]}
    dom = Dom(chromium(page, "--dump-dom"))
    sections = [a["data-host"] for a in dom.having("plan-host")]
    assert sections == list(planned)
    # One bar per GPU of each host, in its own section, and the bars' bytes are --json's.
    bars: dict[str, list[str]] = {}
    host = ""
    for tag, attrs in dom.tags:
        classes = attrs.get("class", "").split()
        if "plan-host" in classes:
            host = attrs["data-host"]
        elif "gpu-bar" in classes:
            bars.setdefault(host, []).append(attrs["data-gpu"])
        elif tag == "rect" and "seg-weights" in classes:
            assert int(attrs["data-bytes"]) == planned[host]["sizing"]["gpu_memory"]["weights"]
        elif tag == "rect" and "seg-kv" in classes:
            assert int(attrs["data-bytes"]) == planned[host]["sizing"]["gpu_memory"]["kv_cache"]
    assert bars == {name: [str(i) for i in range(s["gpu"]["count"])] for name, s in planned.items()}
    assert sum(map(len, bars.values())) == 33
    png = tmp_path / "plan.png"
    screenshot(page, png, PLAN_SIZE)
    assert_a_picture(png, PLAN_SIZE)


def docs_images(target: Path) -> None:
    """The images docs/rollout.md and docs/sizing.md show (the plan: one host that fits, one that does not)."""
    with tempfile.TemporaryDirectory() as work:
        screenshot(rollout_page(Path(work) / "report"), target / "rollout-report.png", REPORT_SIZE)
        page = plan_page(Path(work) / "plan.html", "gpu-h200-01", "gpu-h100-solo")
        screenshot(page, target / "plan.png", DOCS_PLAN_SIZE)


if __name__ == "__main__":
    docs_images(Path(sys.argv[1]))
