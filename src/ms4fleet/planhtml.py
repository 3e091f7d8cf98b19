"""``ms4fleet plan --html``: one self-contained page (inline SVG and CSS, no script, no external asset) with a
stacked bar per GPU of each host: where its memory goes (weights, vLLM's reserve term by term, KV cache, free).

+ ``render_plan_html(plans, inventory)``: from ``ServingPlan.to_dict()`` per host, the ``sizing`` that
  ``plan --json`` prints (its ``sizing.gpu_memory`` split, ``ms4fleet.sizing.Sizing.gpu_memory``), so the
  picture and the JSON cannot disagree. A plan may carry ``hosts`` (several hosts of one shape).

Stable names: ``section.plan-host`` (``data-host``) per host, ``g.gpu-bar`` (``data-gpu``) per GPU, its
``rect.seg-<part>`` with ``data-bytes``, ``line.requested`` at ``gpu_memory_utilization``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

from ms4fleet.catalog import GIB
from ms4fleet.templating import template

WIDTH = 960
LEFT, RIGHT = 190, 24
BAR_H, ROW_H, TOP = 22, 32, 8
# (key in sizing.gpu_memory, css class, legend). The KV margin is drawn inside the KV cache, not beside it.
PARTS: tuple[tuple[str, str, str], ...] = (
    ("weights", "seg-weights", "weights (this GPU's shard)"),
    ("activation", "seg-activation", "activation peak"),
    ("non_torch", "seg-non-torch", "non-torch (CUDA context, NCCL)"),
    ("cuda_graphs", "seg-cuda-graphs", "CUDA graphs"),
    ("kv_cache", "seg-kv", "KV cache"),
    ("free", "seg-free", "free (beyond gpu_memory_utilization)"),
)

SHORT = {
    "weights": "weights",
    "activation": "act.",
    "non_torch": "non-torch",
    "cuda_graphs": "graphs",
    "kv_cache": "KV cache",
    "free": "free",
}


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def _gpu_rows(plan: dict[str, Any]) -> list[tuple[int, str, dict[str, Any] | None]]:
    """``(gpu, label, replica)`` for each of the host's GPUs: the replica it serves, or None (excluded or left
    over: the plan places no replica there)."""
    owner = {gpu: replica for replica in plan["replicas"] for gpu in replica["gpus"]}
    excluded = {e["gpu"]: e["reason"] for e in plan.get("excluded_gpus", [])}
    rows = []
    for gpu in range(plan["gpu"]["count"]):
        replica = owner.get(gpu)
        if replica is not None:
            label = f"GPU {gpu} \u00b7 replica {replica['index']} :{replica['port']}"
        else:
            label = f"GPU {gpu} \u00b7 excluded" if gpu in excluded else f"GPU {gpu} \u00b7 unused"
        rows.append((gpu, label, replica))
    return rows


def _extent(plan: dict[str, Any]) -> int:
    """Bytes the plan's bar spans: the GPU, or more where weights and reserve alone exceed it."""
    memory = plan["sizing"]["gpu_memory"]
    return max(sum(int(memory[key]) for key, _, _ in PARTS), int(memory["total"]), 1)


def gpu_bars_svg(plan: dict[str, Any], scale: int) -> str:
    """One horizontal stacked bar per GPU; ``scale`` bytes span the plot, the same for every host of the page
    so a larger GPU draws a longer bar."""
    memory = plan["sizing"]["gpu_memory"]
    total = max(memory["total"], 1)
    plot_w = WIDTH - LEFT - RIGHT

    def x(n: float) -> float:
        return LEFT + plot_w * n / scale

    rows = _gpu_rows(plan)
    bottom = TOP + ROW_H * len(rows)
    height = bottom + 34
    parts = []
    step = 20 * GIB if total > 60 * GIB else 10 * GIB if total > 20 * GIB else 2 * GIB
    tick = 0
    while tick <= scale:
        parts.append(
            f'<line class="grid" x1="{x(tick):.1f}" y1="{TOP}" x2="{x(tick):.1f}" y2="{bottom}"/>'
            f'<text class="tick" x="{x(tick):.1f}" y="{bottom + 14}" text-anchor="middle">{tick // GIB}</text>'
        )
        tick += step
    parts.append(
        f'<text class="axis-title" x="{LEFT + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">'
        f"GiB (this GPU's CUDA total: {_gib(total)} GiB)</text>"
    )
    for i, (gpu, label, replica) in enumerate(rows):
        top = TOP + i * ROW_H
        mid = top + ROW_H / 2
        title = f"GPU {gpu}"
        parts.append(
            f'<g class="gpu-bar" data-gpu="{gpu}" data-replica="{"" if replica is None else replica["index"]}">'
            f'<text class="gpu-label" x="{LEFT - 8}" y="{mid + 4:.1f}" text-anchor="end">{escape(label)}</text>'
        )
        y0 = mid - BAR_H / 2
        if replica is None:
            parts.append(
                f'<rect class="seg seg-unused" data-bytes="{memory["total"]}" x="{x(0):.1f}" y="{y0:.1f}" '
                f'width="{x(total) - x(0):.1f}" height="{BAR_H}"><title>{title}: no replica</title></rect></g>'
            )
            continue
        at = 0
        for key, css, legend in PARTS:
            size = memory[key]
            if size <= 0:
                continue
            x0, x1 = x(at), x(at + size)
            parts.append(
                f'<rect class="seg {css}" data-bytes="{size}" x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.2f}" '
                f'height="{BAR_H}"><title>{title}: {legend} {_gib(size)} GiB</title></rect>'
            )
            if key == "kv_cache" and memory["kv_margin"]:
                m0 = x(at + size - memory["kv_margin"])
                parts.append(
                    f'<rect class="seg-kv-margin" data-bytes="{memory["kv_margin"]}" x="{m0:.1f}" y="{y0:.1f}" '
                    f'width="{x1 - m0:.2f}" height="{BAR_H}"><title>{title}: KV margin (allocated, not counted '
                    f"in KV tokens) {_gib(memory['kv_margin'])} GiB</title></rect>"
                )
            # The longest label that fits (about 7 px a character at 11 px), else none: the title has it.
            fitting = [t for t in (f"{SHORT[key]} {_gib(size)} GiB", _gib(size)) if x1 - x0 > 7 * len(t) + 8]
            if fitting:
                text = fitting[0]
                parts.append(
                    f'<text class="seg-label {css}-label" x="{(x0 + x1) / 2:.1f}" y="{mid + 4:.1f}" '
                    f'text-anchor="middle">{text}</text>'
                )
            at += size
        if memory["over"]:
            # Weights and reserve past what vLLM may take: shaded over the stack from the requested line on.
            r0 = x(memory["requested"])
            parts.append(
                f'<rect class="seg-over" data-bytes="{memory["over"]}" x="{r0:.1f}" y="{y0:.1f}" '
                f'width="{x(memory["requested"] + memory["over"]) - r0:.1f}" height="{BAR_H}"><title>{title}: '
                f"short by {_gib(memory['over'])} GiB</title></rect>"
            )
        if at > total:
            parts.append(
                f'<line class="gpu-total" x1="{x(total):.1f}" y1="{y0 - 5:.1f}" x2="{x(total):.1f}" '
                f'y2="{y0 + BAR_H + 5:.1f}"><title>{title}: the GPU ends here ({_gib(total)} GiB)</title></line>'
            )
        req = x(memory["requested"])
        parts.append(
            f'<line class="requested" x1="{req:.1f}" y1="{y0 - 3:.1f}" x2="{req:.1f}" y2="{y0 + BAR_H + 3:.1f}">'
            f"<title>gpu_memory_utilization: vLLM takes {_gib(memory['requested'])} GiB</title></line></g>"
        )
    return (
        f'<svg class="gpu-bars" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="memory of each GPU">' + "".join(parts) + "</svg>"
    )


def render_plan_html(plans: Sequence[dict[str, Any]], inventory: str) -> str:
    scale = max((_extent(plan) for plan in plans), default=1)
    hosts = [
        {
            "plan": plan,
            "names": plan.get("hosts") or [plan["host"]],
            "memory": plan["sizing"]["gpu_memory"],
            # Built from numbers and escaped text only: inserted as it is.
            "svg": Markup(gpu_bars_svg(plan, scale)),
        }
        for plan in plans
    ]
    legend = [(css, text) for _, css, text in PARTS]
    count = sum(len(host["names"]) for host in hosts)
    summary = f"{count} host{'s' if count != 1 else ''}"
    if len(hosts) < count:
        summary += f", drawn once per shape ({len(hosts)})"
    return template("ms4fleet", "plan.html.j2", html=True).render(
        inventory=inventory, hosts=hosts, legend=legend, gib=_gib, summary=summary
    )
