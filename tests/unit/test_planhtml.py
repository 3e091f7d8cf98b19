"""``ms4fleet plan --html``: a bar per GPU from the plan's own figures, GPUs without a replica drawn as such,
one self-contained file, and a path that cannot be written refused with one line."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ms4fleet.cli import main
from ms4fleet.health import Exclusion
from ms4fleet.planhtml import render_plan_html
from ms4fleet.serving import plan_host
from tests.unit.test_serving import host

ROOT = Path(__file__).resolve().parents[2]


class Tags(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def test_a_gpu_without_a_replica_is_drawn_empty_and_the_others_from_the_plan() -> None:
    # GPU 3 excluded: its TP2 partner (GPU 2) is left over too, so 3 replicas on 6 GPUs.
    plan = plan_host(host(), excluded=(Exclusion(3, "unhealthy: Xid 79"),)).to_dict()
    page = render_plan_html([plan], "inv.py")
    tags = Tags(page).tags
    bars = [(a["data-gpu"], a["data-replica"]) for t, a in tags if "gpu-bar" in a.get("class", "").split()]
    owner = {gpu: str(r["index"]) for r in plan["replicas"] for gpu in r["gpus"]}
    assert bars == [(str(g), owner.get(g, "")) for g in range(8)]
    assert len(owner) == 6 and 3 not in owner
    unused = [a for t, a in tags if t == "rect" and "seg-unused" in a.get("class", "")]
    assert len(unused) == 2
    assert "GPU 3 \u00b7 excluded" in page and "GPU 2 \u00b7 unused" in page
    memory = plan["sizing"]["gpu_memory"]
    kv = [int(a["data-bytes"]) for t, a in tags if t == "rect" and a.get("class") == "seg seg-kv"]
    assert kv == [memory["kv_cache"]] * 6
    # One file: no script, stylesheet or image to fetch; the only URL is the SVG namespace.
    assert not {"script", "link", "img", "iframe"} & {t for t, _ in tags}
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}


def test_an_unwritable_html_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "missing" / "plan.html"
    assert main(["plan", str(ROOT / "inventory" / "example.py"), "--html", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ms4fleet: error: --html {target}: No such file or directory"]
