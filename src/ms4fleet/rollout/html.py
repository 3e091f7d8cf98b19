"""The rollout report as one self-contained HTML page: no script, no external asset, an inline SVG chart
of the fleet's serving capacity over the rollout, and a table per host.

+ ``render_html(report_dict)``: from ``RolloutReport.to_dict()`` (or the JSON read back).
+ ``capacity_svg(points, total, duration)``: the step chart alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template
from markupsafe import Markup

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 32


def capacity_svg(points: Sequence[Sequence[float]], total: int, duration: float) -> str:
    """A step line of replicas in service (y, 0..total) against seconds since the start (x)."""
    span = max(duration, max((p[0] for p in points), default=0.0), 1e-9)
    top = max(total, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + plot_w * t / span

    def y(n: float) -> float:
        return TOP + plot_h * (1 - n / top)

    path: list[str] = []
    for i, (t, n) in enumerate(points):
        if i == 0:
            path.append(f"M{x(t):.1f},{y(n):.1f}")
        else:
            path.append(f"H{x(t):.1f}V{y(n):.1f}")
    if points:
        path.append(f"H{x(span):.1f}")
    grid = []
    for n in sorted({0, top // 2, top}):
        grid.append(
            f'<line x1="{LEFT}" y1="{y(n):.1f}" x2="{WIDTH - RIGHT}" y2="{y(n):.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 6}" y="{y(n) + 4:.1f}" text-anchor="end">{n}</text>'
        )
    ticks = []
    for k in range(5):
        t = span * k / 4
        ticks.append(f'<text x="{x(t):.1f}" y="{HEIGHT - 12}" text-anchor="middle">{t:.0f}s</text>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11" role="img" '
        f'aria-label="replicas in service over the rollout">'
        + "".join(grid)
        + "".join(ticks)
        + f'<path d="{" ".join(path)}" fill="none" stroke="#1f6feb" stroke-width="2"/>'
        + "</svg>"
    )


@cache
def _template() -> Template:
    environment = Environment(
        loader=PackageLoader("ms4fleet.rollout", "templates"),
        undefined=StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("report.html.j2")


def render_html(report: dict[str, Any]) -> str:
    chart = capacity_svg(report["capacity"]["points"], report["capacity"]["total_replicas"], report["duration_s"])
    # The SVG is built from numbers only, so it is safe to insert unescaped.
    return _template().render(report=report, chart=Markup(chart))
