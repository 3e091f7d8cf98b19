"""The burn-in's verdict: an all-reduce's bus bandwidth (``ms4fleet/hostside/burnin.py``, or the sim's
stand-in) against the catalog's figure for the group's interconnect, naming the slow GPU pair.

+ ``expected(gpu, count)``: ``("nvswitch", 450)`` for 8 x H200 SXM: the interconnect and its GB/s per direction.
+ ``judge(host, gpu, count, result)``: ``BurninVerdict``; ``result`` is burnin.py's JSON (with ``--pairs``,
  each ring pair's own run is in ``pairs``: a slow group is traced to the pair that is slow on its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ms4fleet.catalog import GpuKind

# A healthy group reaches about 80% of the per-direction link figure in nccl-tests' busbw on large messages;
# a link down, trained narrow or falling back to PCIe lands far below half. Half separates the two with room
# for a loaded host.
MIN_FRACTION = 0.5


@dataclass(frozen=True)
class BurninVerdict:
    host: str
    gpus: tuple[int, ...]
    interconnect: str
    expected_gb_s: float
    busbw_gb_s: float
    ok: bool
    reason: str
    # Ring pairs slow on their own (their busbw below the threshold), slowest first.
    degraded_pairs: tuple[tuple[int, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "gpus": list(self.gpus),
            "interconnect": self.interconnect,
            "expected_gb_s": self.expected_gb_s,
            "busbw_gb_s": self.busbw_gb_s,
            "ok": self.ok,
            "reason": self.reason,
            "degraded_pairs": [list(p) for p in self.degraded_pairs],
        }


def expected(gpu: GpuKind, count: int) -> tuple[str, float]:
    """The interconnect of a group of this GPU kind on a host of ``count`` and its catalog figure. SXM GPUs
    talk over NVLink (through NVSwitch on the boards that have one); PCIe cards are judged on PCIe, since
    their NVLink bridges are optional and the inventory does not say whether they are fitted."""
    if gpu.form_factor == "sxm":
        return ("nvswitch" if gpu.has_nvswitch(count) else "nvlink"), float(gpu.nvlink_gb_s)
    return "pcie", float(gpu.pcie_gb_s)


def judge(host: str, gpu: GpuKind, count: int, result: Mapping[str, Any]) -> BurninVerdict:
    interconnect, figure = expected(gpu, count)
    gpus = tuple(int(g) for g in result.get("gpus") or ())
    busbw = float(result.get("busbw_gb_s") or 0.0)
    floor = MIN_FRACTION * figure
    label = ",".join(map(str, gpus))
    if not result.get("correct"):
        failed = ", ".join(map(str, result.get("failed_gpus") or [])) or "?"
        return BurninVerdict(
            host, gpus, interconnect, figure, busbw, False, f"all-reduce on GPUs {label} failed (GPUs {failed})"
        )
    if len(gpus) < 2:
        return BurninVerdict(host, gpus, interconnect, figure, busbw, True, "single GPU: NCCL and CUDA work")
    if busbw >= floor:
        reason = f"busbw {busbw:.0f} GB/s on GPUs {label} ({interconnect}, expected {figure:.0f}, floor {floor:.0f})"
        return BurninVerdict(host, gpus, interconnect, figure, busbw, True, reason)
    slow = sorted(
        (
            (float(p.get("busbw_gb_s") or 0.0), (int(p["gpus"][0]), int(p["gpus"][1])))
            for p in result.get("pairs") or ()
            if len(p.get("gpus") or ()) == 2 and (not p.get("correct") or float(p.get("busbw_gb_s") or 0.0) < floor)
        ),
    )
    pairs = tuple(pair for _, pair in slow)
    named = "; ".join(f"GPUs {a},{b} at {bw:.0f} GB/s" for bw, (a, b) in slow) or "no single pair (run with --pairs)"
    reason = (
        f"busbw {busbw:.0f} GB/s on GPUs {label} is below {floor:.0f} ({MIN_FRACTION:.0%} of the {figure:.0f} GB/s "
        f"{interconnect} figure): degraded pair(s): {named}"
    )
    return BurninVerdict(host, gpus, interconnect, figure, busbw, False, reason, pairs)
