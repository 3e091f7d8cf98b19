"""The sizing model run over the public vLLM start-ups in tests/data/sizing/calibration.toml.

+ ``evaluate()``: one ``RunResult`` per run: predicted vs logged KV budget, and the verdict.
+ ``error_table(results)``, ``mistral_small_4_table()``: the Markdown tables docs/sizing.md carries (a
  test keeps them equal).
+ ``python -m tests.support.sizing_calibration``: print the distribution and the table.
"""

from __future__ import annotations

import statistics
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ms4fleet.catalog import GIB
from ms4fleet.sizing import (
    KvShape,
    ModelShape,
    Sizing,
    SizingInput,
    size,
    vllm_default_max_num_batched_tokens,
    vllm_default_max_num_seqs,
)

CALIBRATION = Path(__file__).resolve().parents[1] / "data" / "sizing" / "calibration.toml"
# The acceptance band: |predicted - logged| within 10 % of the logged budget or 1.5 GiB, whichever is larger.
TOLERANCE_FRACTION = 0.10
TOLERANCE_BYTES = 1.5 * GIB


@dataclass(frozen=True)
class RunResult:
    run: dict[str, Any]
    sizing: Sizing

    @property
    def logged_bytes(self) -> float | None:
        kv = self.run.get("kv_gib")
        return None if kv is None else float(kv) * GIB

    @property
    def error_bytes(self) -> float | None:
        """Predicted minus logged KV budget: positive is the unsafe side (vLLM had less than predicted)."""
        logged = self.logged_bytes
        return None if logged is None else self.sizing.kv_budget_bytes - logged

    @property
    def within_tolerance(self) -> bool | None:
        error, logged = self.error_bytes, self.logged_bytes
        if error is None or logged is None:
            return None
        return abs(error) <= max(TOLERANCE_FRACTION * abs(logged), TOLERANCE_BYTES)


def _shapes(model: dict[str, Any]) -> tuple[KvShape, ModelShape]:
    kv = KvShape(
        kind=model["kv"],
        num_layers=model["num_layers"],
        kv_lora_rank=model.get("kv_lora_rank", 0),
        qk_rope_head_dim=model.get("qk_rope_head_dim", 0),
        num_kv_heads=model.get("num_kv_heads", 0),
        head_dim=model.get("head_dim", 0),
        sliding_window=model.get("sliding_window", 0),
        sliding_layers=model.get("sliding_window_layers", 0),
    )
    shape = ModelShape(
        hidden_size=model["hidden_size"],
        vocab_size=model["vocab_size"],
        num_layers=model["num_layers"],
        intermediate_size=model.get("intermediate_size", 0),
        num_experts=model.get("num_experts", 0),
        experts_per_token=model.get("experts_per_token", 0),
        moe_intermediate_size=model.get("moe_intermediate_size", 0),
        multimodal=model.get("multimodal", False),
    )
    return kv, shape


def evaluate(path: Path = CALIBRATION) -> list[RunResult]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    results = []
    for run in data["runs"]:
        kv, shape = _shapes(data["models"][run["model"]])
        total = int(run["gpu_total_gib"] * GIB)
        sizing = size(
            SizingInput(
                gpu_memory_bytes=total,
                tp=run["tp"],
                gpu_memory_utilization=run["gpu_memory_utilization"],
                weight_bytes=int(run["weights_gib"] * GIB) * run["tp"],
                kv=kv,
                max_model_len=run["max_model_len"],
                max_num_batched_tokens=run.get("max_num_batched_tokens")
                or vllm_default_max_num_batched_tokens(total, run["gpu"]),
                cuda_graphs=not run.get("enforce_eager", False),
                model=shape,
                max_num_seqs=run.get("max_num_seqs") or vllm_default_max_num_seqs(total, run["gpu"]),
                vllm_version=run["vllm_version"],
                gpu_name=run["gpu"],
            )
        )
        results.append(RunResult(run, sizing))
    return results


def summary(results: list[RunResult]) -> dict[str, float]:
    errors = [r.error_bytes / GIB for r in results if r.error_bytes is not None]
    relative = [abs(r.error_bytes) / abs(r.logged_bytes) for r in results if r.error_bytes and r.logged_bytes]
    within = [r.within_tolerance for r in results if r.within_tolerance is not None]
    return {
        "runs": len(results),
        "runs_with_logged_kv": len(errors),
        "within_tolerance": sum(within) / len(within),
        "median_error_gib": statistics.median(errors),
        "mean_abs_error_gib": statistics.fmean(abs(e) for e in errors),
        "max_over_prediction_gib": max(errors),
        "max_under_prediction_gib": min(errors),
        "median_abs_relative_error": statistics.median(relative),
    }


def error_table(results: list[RunResult]) -> str:
    lines = [
        "| run | model | GPU x TP | util | vLLM | logged KV GiB | predicted GiB | error GiB | error % | started | verdict |",
        "|---|---|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        run, error, logged = r.run, r.error_bytes, r.logged_bytes
        error_cell = "" if error is None else f"{error / GIB:+.2f}"
        percent = "" if error is None or not logged else f"{100 * error / abs(logged):+.1f}"
        logged_cell = "" if logged is None else f"{logged / GIB:.2f}"
        lines.append(
            f"| [{run['id']}]({run['source']}) | {run['model']} | {run['gpu']} x {run['tp']} "
            f"| {run['gpu_memory_utilization']:.2f} | {run['vllm_version']} | {logged_cell} "
            f"| {r.sizing.kv_budget_bytes / GIB:.2f} | {error_cell} | {percent} "
            f"| {'yes' if run['started'] else 'no'} | {r.sizing.verdict} |"
        )
    return "\n".join(lines)


def mistral_small_4_table() -> str:
    """Mistral Small 4 on every catalog GPU, as `ms4fleet plan` sizes one replica with the serving
    defaults (utilization 0.90, 64 sequences, 8192 batched tokens, 262,144-token context)."""
    from ms4fleet.catalog import gpu_kinds
    from ms4fleet.config import HostConfig
    from ms4fleet.serving import sizing_input

    lines = [
        "| GPU | CUDA total GiB | checkpoint | TP | weights GiB/GPU | reserve GiB | KV budget GiB | KV tokens | "
        "full 262K seqs | verdict |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for kind in gpu_kinds().values():
        for checkpoint, tps in (("fp8", (2, 4)), ("nvfp4", (1, 2))):
            for tp in tps:
                config = HostConfig.model_validate(
                    {
                        "name": "-",
                        "gpu": {"kind": kind.id, "count": 8},
                        "serving": {"model": "mistral-small-4", "checkpoint": checkpoint, "tensor_parallel_size": tp},
                    }
                )
                s = size(sizing_input(config, tp))
                lines.append(
                    f"| {kind.id} | {kind.cuda_memory_bytes / GIB:.2f} | {checkpoint} | {tp} "
                    f"| {s.weights_per_gpu_bytes / GIB:.2f} | {s.reserve_bytes / GIB:.2f} "
                    f"| {s.kv_budget_bytes / GIB:.2f} | {s.kv_tokens:,} | {s.full_length_sequences} | {s.verdict} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    evaluated = evaluate()
    for key, value in summary(evaluated).items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    print(error_table(evaluated))
    print(mistral_small_4_table())
