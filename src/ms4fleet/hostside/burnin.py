#!/usr/bin/env python3
"""NCCL all-reduce burn-in over one replica's GPU group, printed as one JSON document.

Runs where torch with NCCL is: inside the serving image (``docker run --gpus ... python3 burnin.py``), so
it tests the stack the replica will use. Every rank all-reduces a buffer of ones for ``--iters`` timed
rounds after a warm-up; the result must equal the world size on every rank (a wrong sum is a failure, not
a slow link). Bandwidth as nccl-tests reports it: ``algbw = bytes / time`` and, for a ring all-reduce,
``busbw = algbw * 2 * (n - 1) / n`` (0 for one GPU: the single-rank path still proves the CUDA context,
the allocator and NCCL's init, and records algbw). With ``--pairs`` each pair of GPUs the ring crosses is
also run on its own (``pairs``), so a slow group is traced to its slow link. The core
(``ms4fleet.burnin.judge``) compares busbw with the catalog's figure for the interconnect.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any, Dict, List, Optional


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank(rank: int, world: int, gpus: List[int], size: int, iters: int, port: int, queue: Any) -> None:
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(gpus[rank])
    dist.init_process_group("nccl", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=world)
    try:
        buf = torch.ones(size // 4, dtype=torch.float32, device="cuda")
        for _ in range(5):
            dist.all_reduce(buf)
        torch.cuda.synchronize()
        buf.fill_(1.0)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(buf)
            buf.div_(world)  # keeps the values at 1 so the final check is exact
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        dist.all_reduce(buf)
        torch.cuda.synchronize()
        correct = bool(torch.all(buf == float(world)).item())
        queue.put({"rank": rank, "gpu": gpus[rank], "seconds": elapsed, "correct": correct})
    finally:
        dist.destroy_process_group()


def run(gpus: List[int], size: int, iters: int) -> Dict[str, Any]:
    import torch.multiprocessing as mp

    world = len(gpus)
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    port = _free_port()
    procs = [context.Process(target=_rank, args=(r, world, gpus, size, iters, port, queue)) for r in range(world)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    ranks = sorted((queue.get() for _ in range(sum(1 for p in procs if p.exitcode == 0))), key=lambda r: r["rank"])
    failed = [gpus[i] for i, p in enumerate(procs) if p.exitcode != 0]
    seconds = max((r["seconds"] for r in ranks), default=0.0)
    algbw = size * iters / seconds / 1e9 if seconds > 0 else 0.0
    return {
        "gpus": gpus,
        "world_size": world,
        "bytes": size,
        "iters": iters,
        "seconds": round(seconds, 6),
        "algbw_gb_s": round(algbw, 2),
        "busbw_gb_s": round(algbw * 2 * (world - 1) / world, 2),
        "correct": bool(ranks) and not failed and all(r["correct"] for r in ranks),
        "failed_gpus": failed + [r["gpu"] for r in ranks if not r["correct"]],
        "nccl_version": _nccl_version(),
    }


def ring_pairs(gpus: List[int]) -> List[List[int]]:
    """The links a ring all-reduce crosses (the same pairs as ``ms4fleet.burnin.ring_pairs``)."""
    if len(gpus) < 3:
        return [gpus] if len(gpus) == 2 else []
    return [[gpus[i], gpus[(i + 1) % len(gpus)]] for i in range(len(gpus))]


def _nccl_version() -> Optional[str]:
    try:
        import torch

        version = torch.cuda.nccl.version()
        return ".".join(str(v) for v in version) if isinstance(version, tuple) else str(version)
    except Exception:
        return None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", required=True, help="CUDA device indices of the group, e.g. 0,1")
    parser.add_argument("--bytes", type=int, default=256 * 1024 * 1024)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--pairs", action="store_true", help="also run each pair of the ring on its own")
    args = parser.parse_args(argv)
    gpus = [int(g) for g in args.gpus.split(",")]
    os.environ.setdefault("NCCL_DEBUG", "WARN")
    result = run(gpus, args.bytes, args.iters)
    if args.pairs:
        result["pairs"] = [run(list(pair), args.bytes, args.iters) for pair in ring_pairs(gpus)]
    json.dump(result, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
