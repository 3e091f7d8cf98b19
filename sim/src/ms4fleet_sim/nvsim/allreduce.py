"""The simulated NCCL all-reduce: ``nvidia-sim-allreduce --gpus 0,1 [--pairs]`` prints what
``ms4fleet/hostside/burnin.py`` prints on real GPUs (same keys), from the host's profile.

A healthy link runs at the profile's ``allreduce_busbw_gb_s``; faults.json slows a pair:
``{"allreduce": {"slow_pairs": {"2-3": 0.2}}}`` (that link at 20%). A ring all-reduce is as fast as its
slowest link, so one slow pair slows its whole group, and only that pair is slow when run on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ms4fleet_sim.nvsim import state

SIZE = 256 * 1024 * 1024
ITERS = 20


def _factor(slow: dict[str, float], a: int, b: int) -> float:
    return float(slow.get(f"{a}-{b}", slow.get(f"{b}-{a}", 1.0)))


def _pairs(gpus: list[int]) -> list[list[int]]:
    if len(gpus) < 3:
        return [gpus] if len(gpus) == 2 else []
    return [[gpus[i], gpus[(i + 1) % len(gpus)]] for i in range(len(gpus))]


def run(gpus: list[int], healthy_gb_s: float, slow: dict[str, float]) -> dict[str, Any]:
    world = len(gpus)
    links = [_factor(slow, a, b) for a, b in _pairs(gpus)]
    busbw = healthy_gb_s * min(links) if links else 0.0
    # Single rank: no link crossed; the figure of the real H200's single-rank run stands in for local copies.
    algbw = busbw * world / (2 * (world - 1)) if world > 1 else 432.0
    seconds = SIZE * ITERS / (algbw * 1e9)
    return {
        "gpus": gpus,
        "world_size": world,
        "bytes": SIZE,
        "iters": ITERS,
        "seconds": round(seconds, 6),
        "algbw_gb_s": round(algbw, 2),
        "busbw_gb_s": round(busbw, 2),
        "correct": True,
        "failed_gpus": [],
        "nccl_version": "sim",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="simulated NCCL all-reduce (ms4fleet sim)")
    parser.add_argument("--gpus", required=True)
    parser.add_argument("--pairs", action="store_true")
    args = parser.parse_args(argv)
    if state.loaded_module() is None:
        sys.stderr.write("NCCL WARN Cuda failure 'no CUDA-capable device is detected' (no driver loaded)\n")
        return 1
    profile = state.profile()
    known = {int(g["index"]) for g in profile["gpus"]}
    gpus = [int(g) for g in args.gpus.split(",")]
    if not set(gpus) <= known:
        sys.stderr.write(f"NCCL WARN invalid device ordinal in {gpus}\n")
        return 1
    slow = (state.faults(state.FAULTS).get("allreduce") or {}).get("slow_pairs") or {}
    healthy = float(profile["allreduce_busbw_gb_s"])
    result = run(gpus, healthy, slow)
    if args.pairs:
        result["pairs"] = [run(pair, healthy, slow) for pair in _pairs(gpus)]
    json.dump(result, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0
