"""Headroom gate: would a replica start on this host NOW, given what its GPUs hold?

+ ``check_headroom(report, profile, tp=..., gpu_indices=..., replacing=...)``: the core's sizing run on
  probe data -> ``Headroom`` (verdict fits | fits-with-reduced-context | does-not-fit, reasons, per-GPU
  figures).
+ ``ReplacedService``: the units/containers of the replica being replaced; GPU memory they hold counts as
  available (it is freed when they stop), memory held by anything else does not.

The gate is pure: it runs on probe data before anything is stopped, so a host that cannot fit the new
replica fails on its own while the old one keeps serving.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ms4fleet import paths
from ms4fleet.catalog import ModelProfile
from ms4fleet.config import DEFAULT_GPU_MEMORY_UTILIZATION, HostConfig
from ms4fleet.probe import GpuProcess, ProbeReport
from ms4fleet.serving import Replica, ServingPlan
from ms4fleet.sizing import (
    DEFAULT_MAX_NUM_BATCHED_TOKENS,
    KvShape,
    ModelShape,
    Sizing,
    SizingInput,
    Verdict,
    gib,
    size,
)


@dataclass(frozen=True)
class ReplacedService:
    """What runs the replica being replaced: systemd units, container names or ids (any may be empty)."""

    systemd_units: frozenset[str] = frozenset()
    container_names: frozenset[str] = frozenset()
    container_ids: frozenset[str] = frozenset()
    # Every ms4fleet replica of the host is replaced (a rollout's switch stops them all, those the new
    # release no longer has included): memory any of them holds counts as available.
    every_replica: bool = False

    def owns(self, proc: GpuProcess) -> bool:
        if proc.systemd_unit and proc.systemd_unit in self.systemd_units:
            return True
        if proc.container_name and proc.container_name.lstrip("/") in self.container_names:
            return True
        if self.every_replica and (
            _REPLICA_UNIT.fullmatch(proc.systemd_unit or "")
            or _REPLICA_CONTAINER.fullmatch((proc.container_name or "").lstrip("/"))
        ):
            return True
        return bool(proc.container_id and proc.container_id in self.container_ids)


def _any_index(name: str) -> re.Pattern[str]:
    """``name`` (replica 0's) with any replica index in place of the 0."""
    before, after = name.rsplit("0", 1)
    return re.compile(rf"{re.escape(before)}\d+{re.escape(after)}")


_REPLICA_UNIT = _any_index(paths.unit_name(0))
_REPLICA_CONTAINER = _any_index(paths.container_name(0))


@dataclass(frozen=True)
class GpuHeadroom:
    index: int
    total_bytes: int | None
    free_bytes: int | None
    reclaimable_bytes: int
    available_bytes: int | None
    others: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "reclaimable_bytes": self.reclaimable_bytes,
            "available_bytes": self.available_bytes,
            "others": list(self.others),
        }


@dataclass(frozen=True)
class Headroom:
    host: str
    verdict: Verdict
    reasons: tuple[str, ...]
    gpus: tuple[GpuHeadroom, ...]
    sizing: Sizing | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def fits(self) -> bool:
        return self.verdict != "does-not-fit"

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "sizing": self.sizing.to_dict() if self.sizing else None,
        }


def _describe(proc: GpuProcess) -> str:
    owner = proc.systemd_unit or proc.container_name or (proc.container_id or "")[:12] or "no unit"
    held = gib(proc.used_bytes) if proc.used_bytes is not None else "an unknown amount"
    return f"pid {proc.pid} {proc.name or '?'} ({owner}) holds {held}"


def check_headroom(
    report: ProbeReport,
    profile: ModelProfile,
    *,
    tp: int,
    gpu_indices: Sequence[int] | None = None,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    max_model_len: int | None = None,
    kv_cache_dtype: str = "auto",
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS,
    replacing: ReplacedService | None = None,
    max_num_seqs: int | None = None,
) -> Headroom:
    """Size one replica of ``profile`` on ``tp`` GPUs of the probed host, counting only memory that is
    free or held by ``replacing`` as available."""
    host = report.hostname
    indices = list(gpu_indices) if gpu_indices is not None else list(range(tp))
    if len(indices) != tp:
        raise ValueError(f"host {host}: gpu_indices {indices} do not match tp={tp}")
    missing = [index for index in indices if index not in {gpu.index for gpu in report.gpus}]
    if missing:
        reason = f"GPU(s) {missing} not found: the probe ({report.source}) saw {len(report.gpus)} GPU(s)"
        return Headroom(host, "does-not-fit", (reason,), ())
    owner = replacing or ReplacedService()
    reasons: list[str] = []
    notes: list[str] = []
    gpus: list[GpuHeadroom] = []
    mig_blocked = False
    for index in indices:
        gpu = report.gpu(index)
        reclaim = 0
        others = []
        for proc in report.processes_on(index):
            if owner.owns(proc):
                if proc.used_bytes is None:
                    notes.append(f"GPU {index}: {_describe(proc)}, not counted as available")
                else:
                    reclaim += proc.used_bytes
            else:
                others.append(_describe(proc))
        # vLLM sizes from CUDA's total: NVML's total less what the driver reserves (exactly so on the
        # real H200, tests/data/h200/2026-12-02); the catalog's CUDA figure when the probe lacks either.
        kind = report.gpu_kind(gpu)
        if gpu.memory_total_bytes is not None and gpu.memory_reserved_bytes is not None:
            total: int | None = gpu.memory_total_bytes - gpu.memory_reserved_bytes
        else:
            total = kind.cuda_memory_bytes if kind else gpu.memory_total_bytes
        available = None
        if gpu.memory_free_bytes is not None:
            ceiling = (gpu.memory_total_bytes or 0) - (gpu.memory_reserved_bytes or 0)
            available = min(gpu.memory_free_bytes + reclaim, ceiling) if ceiling > 0 else gpu.memory_free_bytes
        gpus.append(GpuHeadroom(index, total, gpu.memory_free_bytes, reclaim, available, tuple(others)))
        if gpu.mig_mode == "enabled":
            mig_blocked = True
            reasons.append(f"GPU {index} has MIG enabled: vLLM needs whole GPUs (nvidia-smi -i {index} -mig 0)")

    totals = [g.total_bytes for g in gpus]
    if any(total is None for total in totals):
        reasons.append("GPU memory unknown: neither the driver nor the catalog knows these GPUs")
        return Headroom(host, "does-not-fit", tuple(reasons), tuple(gpus), notes=tuple(notes))
    known = [g.available_bytes for g in gpus if g.available_bytes is not None]
    least = min(known) if len(known) == len(gpus) else None
    if least is None:
        notes.append(f"no live memory figures (probe source {report.source}): the start gate was not checked")
    sizing = size(
        SizingInput(
            gpu_memory_bytes=min(t for t in totals if t is not None),
            tp=tp,
            gpu_memory_utilization=gpu_memory_utilization,
            weight_bytes=profile.weight_bytes,
            kv=KvShape.from_profile(profile),
            max_model_len=profile.max_model_len(max_model_len),
            kv_cache_dtype=kv_cache_dtype,
            max_num_batched_tokens=max_num_batched_tokens,
            free_memory_bytes=least,
            model=ModelShape.from_profile(profile),
            max_num_seqs=max_num_seqs,
            gpu_name=report.gpu(indices[0]).name or "",
        )
    )
    reasons.extend(sizing.reasons)
    if sizing.start_gate_ok is False:
        for gpu_headroom in gpus:
            if gpu_headroom.available_bytes is not None and gpu_headroom.available_bytes < sizing.requested_bytes:
                held = "; ".join(gpu_headroom.others) or "memory not freed by the replaced service"
                reasons.append(
                    f"GPU {gpu_headroom.index}: {gib(gpu_headroom.available_bytes)} available of "
                    f"{gib(sizing.requested_bytes)} needed: {held}"
                )
    verdict: Verdict = "does-not-fit" if mig_blocked else sizing.verdict
    return Headroom(host, verdict, tuple(reasons), tuple(gpus), sizing, tuple(notes))


def check_plan(
    report: ProbeReport, config: HostConfig, plan: ServingPlan, every_replica: bool = False
) -> list[tuple[Replica, Headroom]]:
    """The gate for every replica of a host's plan, each counting the memory of the replica it replaces
    (its own unit and container) as available; ``every_replica`` (a rollout, which stops them all): the
    memory of every ms4fleet replica on the host. Both engines call this; neither re-derives it."""
    serving = config.serving
    return [
        (
            replica,
            check_headroom(
                report,
                plan.profile,
                tp=plan.tp,
                gpu_indices=replica.gpus,
                gpu_memory_utilization=serving.gpu_memory_utilization,
                max_model_len=plan.max_model_len,
                kv_cache_dtype=serving.kv_cache_dtype,
                max_num_batched_tokens=serving.max_num_batched_tokens,
                max_num_seqs=serving.max_num_seqs,
                replacing=ReplacedService(
                    systemd_units=frozenset({replica.unit_name}),
                    container_names=frozenset({replica.container_name}),
                    every_replica=every_replica,
                ),
            ),
        )
        for replica in plan.replicas
    ]
