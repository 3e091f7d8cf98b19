"""The rollout report as one self-contained HTML page: no script, no external asset; two inline SVG charts on
one time axis (the fleet's serving capacity with its wave bands and minimum, a timeline row per host) and a
table per host.

+ ``render_html(report_dict)``: from ``RolloutReport.to_dict()`` (or the JSON read back).
+ ``capacity_svg(report_dict, axis)`` / ``timeline_svg(report_dict, axis)``: the charts alone.

Stable names for readers and tests: ``svg#capacity`` holds ``g.wave-band`` (one per wave that ran),
``line#min-capacity`` and ``path.capacity-line``; ``svg#timeline`` holds one ``g.timeline-row`` per host
(``data-host``), its ``rect.seg-*`` spans and ``.mark-<phase>`` marks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from ms4fleet.templating import template

WIDTH = 960
RIGHT = 24
# Host names are drawn in a monospace font, so their width is known without a browser.
CHAR_W = 7.3
NAME_CHARS = 32
ROW_H = 22
CAPACITY_H, CAP_TOP, CAP_BOTTOM = 260, 30, 42

# Spans of a host's switch, drawn on its row: (from step, until one of these steps, class, legend). The driver
# marks ``stopped`` as the stop command starts and ``started`` once every new replica is ready.
_ENDS = ("rolling-back", "failed", "unreachable")
SPANS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("drained", ("stopped", *_ENDS), "seg-draining", "draining (requests finish)"),
    ("stopped", ("started", *_ENDS), "seg-restarting", "stop, start, load until ready"),
    ("started", ("verified", *_ENDS), "seg-verifying", "verifying"),
    ("verified", ("rejoined", *_ENDS), "seg-rejoining", "rejoining the LB"),
    ("rolling-back", ("rolled-back", "failed", "unreachable"), "seg-rollback", "rolling back"),
)
MARKS = ("prestaged", "drained", "stopped", "started", "verified", "rejoined", "rolled-back", "failed", "unreachable")
_OUT = {"drained", "stopped", "started", "verified", "rolling-back"}


@dataclass(frozen=True)
class Axis:
    """The time axis both charts share: same left edge (past the longest host name), same scale."""

    left: float
    span: float

    @classmethod
    def of(cls, report: dict[str, Any]) -> Axis:
        longest = max((len(_short(h["host"])) for h in report["hosts"]), default=4)
        points = report["capacity"]["points"]
        span = max(report["duration_s"], max((p[0] for p in points), default=0.0), 1e-9)
        return cls(left=max(64.0, 16 + CHAR_W * longest), span=span)

    @property
    def plot_w(self) -> float:
        return WIDTH - self.left - RIGHT

    def x(self, t: float) -> float:
        return self.left + self.plot_w * min(max(t, 0.0), self.span) / self.span

    def ticks(self) -> list[float]:
        """About six round steps (1, 2, 5 x 10^k seconds, or whole minutes) across the span."""
        raw = self.span / 6
        steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200]
        step = next((s for s in steps if s >= raw), 10 ** math.ceil(math.log10(raw)))
        return [k * step for k in range(int(self.span // step) + 1)]


def _short(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "\u2026"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _time_axis(axis: Axis, top: float, bottom: float) -> str:
    """Grid lines from ``top`` to ``bottom`` and their labels under ``bottom``."""
    out = []
    for t in axis.ticks():
        x = axis.x(t)
        out.append(
            f'<line class="grid" x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{bottom:.1f}"/>'
            f'<text class="tick" x="{x:.1f}" y="{bottom + 16:.1f}" text-anchor="middle">{_clock(t)}</text>'
        )
    return "".join(out)


def capacity_svg(report: dict[str, Any], axis: Axis) -> str:
    """Replicas in service (step line) over the rollout, each wave a labelled band, the policy's minimum a
    dashed line."""
    cap = report["capacity"]
    total = max(int(cap["total_replicas"]), 1)
    bottom = CAPACITY_H - CAP_BOTTOM
    plot_h = bottom - CAP_TOP

    def y(n: float) -> float:
        return CAP_TOP + plot_h * (1 - n / total)

    parts = []
    for i, wave in enumerate(cap.get("waves", [])):
        x0, x1 = axis.x(wave["start"]), axis.x(wave["end"])
        label = "canary" if wave["kind"] == "canary" else f"wave {wave['index']}"
        hosts = ", ".join(wave["hosts"])
        parts.append(
            f'<g class="wave-band {"band-even" if i % 2 == 0 else "band-odd"}" data-wave="{wave["index"]}" '
            f'data-kind="{escape(wave["kind"])}"><title>{escape(label)}: {escape(hosts)}</title>'
            f'<rect x="{x0:.1f}" y="{CAP_TOP:.1f}" width="{max(x1 - x0, 1.0):.1f}" height="{plot_h:.1f}"/>'
            f'<text class="band-label" x="{(x0 + x1) / 2:.1f}" y="{CAP_TOP - 8:.1f}" text-anchor="middle">'
            f"{escape(label)}</text></g>"
        )
    for n in sorted({0, total // 2, total}):
        parts.append(
            f'<line class="grid" x1="{axis.left:.1f}" y1="{y(n):.1f}" x2="{WIDTH - RIGHT}" y2="{y(n):.1f}"/>'
            f'<text class="tick" x="{axis.left - 8:.1f}" y="{y(n) + 4:.1f}" text-anchor="end">{n}</text>'
        )
    parts.append(_time_axis(axis, CAP_TOP, bottom))
    floor_hosts, floor = cap.get("floor_hosts"), cap.get("floor_replicas")
    if floor is not None:
        parts.append(
            f'<line id="min-capacity" class="min-capacity" x1="{axis.left:.1f}" y1="{y(floor):.1f}" '
            f'x2="{WIDTH - RIGHT}" y2="{y(floor):.1f}"/>'
            f'<text class="min-label" x="{WIDTH - RIGHT - 4}" y="{y(floor) + 14:.1f}" text-anchor="end">'
            f"minimum {floor} replicas ({floor_hosts} hosts = hosts \u2212 max unavailable)</text>"
        )
    path = []
    for i, (t, n) in enumerate(cap["points"]):
        path.append(f"M{axis.x(t):.1f},{y(n):.1f}" if i == 0 else f"H{axis.x(t):.1f}V{y(n):.1f}")
    if cap["points"]:
        path.append(f"H{axis.x(axis.span):.1f}")
    parts.append(f'<path class="capacity-line" d="{" ".join(path)}"/>')
    parts.append(
        f'<text class="axis-title" transform="translate(14 {(CAP_TOP + bottom) / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">replicas in service</text>'
        f'<text class="axis-title" x="{axis.left + axis.plot_w / 2:.1f}" y="{CAPACITY_H - 4}" '
        f'text-anchor="middle">time since the rollout started</text>'
    )
    return (
        f'<svg id="capacity" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{CAPACITY_H}" '
        f'viewBox="0 0 {WIDTH} {CAPACITY_H}" role="img" aria-label="replicas in service over the rollout">'
        + "".join(parts)
        + "</svg>"
    )


def _row(host: dict[str, Any], axis: Axis, top: float, end: float) -> str:
    steps: Sequence[dict[str, Any]] = host["history"]
    mid = top + ROW_H / 2
    name = host["host"]
    parts = [
        f'<g class="timeline-row" data-host="{escape(name)}" data-phase="{escape(host["phase"])}">'
        f"<title>{escape(name)}: {escape(host['phase'])}</title>"
        f'<text class="host" x="{axis.left - 8:.1f}" y="{mid + 4:.1f}" text-anchor="end">{escape(_short(name))}</text>'
    ]
    # A thin line while the host serves (old release before its drain, new or old after it is back).
    out_at = next((s["t"] for s in steps if s["phase"] in _OUT), None)
    back_at = next((s["t"] for s in steps if s["phase"] in {"rejoined", "rolled-back"}), None)
    serve_until = out_at if out_at is not None else end
    if host["phase"] not in {"failed", "unreachable"} or out_at is not None:
        parts.append(
            f'<line class="serving" x1="{axis.x(0):.1f}" y1="{mid:.1f}" x2="{axis.x(serve_until):.1f}" y2="{mid:.1f}"/>'
        )
    if back_at is not None:
        parts.append(
            f'<line class="serving serving-after" x1="{axis.x(back_at):.1f}" y1="{mid:.1f}" '
            f'x2="{axis.x(end):.1f}" y2="{mid:.1f}"/>'
        )
    for start, until, css, legend in SPANS:
        began = next((s["t"] for s in steps if s["phase"] == start), None)
        if began is None:
            continue
        later = [s["t"] for s in steps if s["phase"] in until and s["t"] >= began]
        stop = min(later) if later else end
        x0, x1 = axis.x(began), axis.x(stop)
        parts.append(
            f'<rect class="seg {css}" x="{x0:.1f}" y="{top + 4:.1f}" width="{max(x1 - x0, 1.5):.1f}" '
            f'height="{ROW_H - 8}"><title>{escape(name)}: {escape(legend)} {stop - began:.1f} s</title></rect>'
        )
    for step in steps:
        if step["phase"] in MARKS:
            x = axis.x(step["t"])
            parts.append(
                f'<circle class="mark mark-{step["phase"]}" cx="{x:.1f}" cy="{mid:.1f}" r="3">'
                f"<title>{escape(name)}: {step['phase']} at {step['t']:.1f} s</title></circle>"
            )
    parts.append("</g>")
    return "".join(parts)


def timeline_svg(report: dict[str, Any], axis: Axis) -> str:
    """One row per host on the capacity chart's time axis: its switch's spans and a mark at each step."""
    hosts = report["hosts"]
    top = 8
    bottom = top + ROW_H * len(hosts)
    height = bottom + 26
    parts = []
    for i, wave in enumerate(report["capacity"].get("waves", [])):
        x0, x1 = axis.x(wave["start"]), axis.x(wave["end"])
        parts.append(
            f'<rect class="timeline-band {"band-even" if i % 2 == 0 else "band-odd"}" x="{x0:.1f}" y="{top}" '
            f'width="{max(x1 - x0, 1.0):.1f}" height="{bottom - top}"/>'
        )
    parts.append(_time_axis(axis, top, bottom))
    for i, host in enumerate(hosts):
        parts.append(_row(host, axis, top + i * ROW_H, report["duration_s"]))
    return (
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="each host\'s steps over the rollout">'
        + "".join(parts)
        + "</svg>"
    )


def render_html(report: dict[str, Any]) -> str:
    axis = Axis.of(report)
    # The SVGs are built from numbers and escaped text only, so they are inserted as they are.
    return template("ms4fleet.rollout", "report.html.j2", html=True).render(
        report=report,
        chart=Markup(capacity_svg(report, axis)),
        timeline=Markup(timeline_svg(report, axis)),
        spans=[(css, legend) for _, _, css, legend in SPANS],
    )
