"""GPU memory model for vLLM: what is left for the KV cache, how many tokens it holds, and whether a
model fits. Every constant is explained, with its source, in docs/sizing.md.

+ ``kv_bytes_per_token``: e.g. Mistral Small 4 in BF16 -> 23,040 B on every TP rank.
+ ``size``: one replica on one GPU kind -> a ``Sizing`` with a verdict a person can act on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ms4fleet.catalog import GIB, ModelProfile

Verdict = Literal["fits", "fits-with-reduced-context", "does-not-fit"]
KvCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16"]

# vLLM allocates the KV cache in blocks of this many tokens (its default --block-size on CUDA).
BLOCK_SIZE = 16
# Activation peak of vLLM's profiling forward pass: a fixed part plus a part that grows with the tokens
# of one scheduler step. 2.0 GiB + 0.35 GiB per 1024 tokens spans the 4.8-7.4 GiB measured on H100 with
# 8192-16384 batched tokens (llm-d-benchmark empirical-vllm-memory-results.md).
ACTIVATION_BASE_BYTES = 2 * GIB
ACTIVATION_BYTES_PER_1K_TOKENS = int(0.35 * GIB)
# Memory outside PyTorch's allocator (NCCL buffers, cuBLAS workspaces): top of the measured 0.13-0.55 GiB.
NON_TORCH_BYTES = int(0.55 * GIB)
# CUDA-graph capture: top of the measured 0.1-1 GiB (vLLM's own estimate overshoots, vllm#45178, #53013).
CUDA_GRAPH_BYTES = 1 * GIB
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192


@dataclass(frozen=True)
class KvShape:
    """What one token costs in the KV cache: the attention kind and its dimensions."""

    kind: Literal["mla", "gqa"]
    num_layers: int
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0

    @classmethod
    def from_profile(cls, profile: ModelProfile) -> KvShape:
        return cls(
            kind=profile.kv,
            num_layers=profile.num_layers,
            kv_lora_rank=profile.kv_lora_rank,
            qk_rope_head_dim=profile.qk_rope_head_dim,
            num_kv_heads=profile.num_kv_heads,
            head_dim=profile.head_dim,
        )

    @classmethod
    def from_model_config(cls, config: dict[str, Any]) -> KvShape:
        """Read a Hugging Face ``config.json`` (or a Mistral-native ``params.json``).

        Multimodal configs keep the language model under ``text_config``; MLA models carry
        ``kv_lora_rank``; GQA models default ``num_key_value_heads`` to the attention heads and
        ``head_dim`` to hidden size / heads, as transformers does.
        """
        cfg = config.get("text_config") or config
        layers = cfg.get("num_hidden_layers", cfg.get("n_layers"))
        if not isinstance(layers, int) or layers <= 0:
            raise ValueError("model config has no num_hidden_layers (or n_layers)")
        if cfg.get("kv_lora_rank"):
            return cls(
                kind="mla",
                num_layers=layers,
                kv_lora_rank=int(cfg["kv_lora_rank"]),
                qk_rope_head_dim=int(cfg.get("qk_rope_head_dim", 0)),
            )
        heads = cfg.get("num_attention_heads", cfg.get("n_heads"))
        kv_heads = cfg.get("num_key_value_heads", cfg.get("n_kv_heads")) or heads
        hidden = cfg.get("hidden_size", cfg.get("dim"))
        head_dim = cfg.get("head_dim") or (hidden // heads if hidden and heads else None)
        if not kv_heads or not head_dim:
            raise ValueError("model config has neither MLA (kv_lora_rank) nor GQA head dimensions")
        return cls(kind="gqa", num_layers=layers, num_kv_heads=int(kv_heads), head_dim=int(head_dim))


def kv_dtype_bytes(kv_cache_dtype: str) -> int:
    """Bytes per cached element: ``auto`` keeps the model's BF16, any fp8 variant halves it."""
    return 1 if kv_cache_dtype.startswith("fp8") else 2


def kv_bytes_per_token(shape: KvShape, kv_cache_dtype: str = "auto", tp: int = 1) -> int:
    """KV-cache bytes one token takes on EACH GPU of a replica.

    MLA caches the compressed latent plus the rope key, and vLLM replicates it on every TP rank
    (it treats the latent as a single KV head, vllm#47929): TP does not divide it. GQA splits KV heads
    across ranks; when there are fewer KV heads than ranks vLLM replicates them, so a rank never holds
    less than one head.
    """
    width = kv_dtype_bytes(kv_cache_dtype)
    if shape.kind == "mla":
        return (shape.kv_lora_rank + shape.qk_rope_head_dim) * shape.num_layers * width
    heads_per_rank = max(1, math.ceil(shape.num_kv_heads / tp))
    return 2 * heads_per_rank * shape.head_dim * shape.num_layers * width


def activation_bytes(max_num_batched_tokens: int) -> int:
    return ACTIVATION_BASE_BYTES + ACTIVATION_BYTES_PER_1K_TOKENS * max_num_batched_tokens // 1024


def reserve_bytes(max_num_batched_tokens: int, cuda_graphs: bool = True) -> int:
    """Everything vLLM keeps per GPU besides weights and KV cache."""
    return activation_bytes(max_num_batched_tokens) + NON_TORCH_BYTES + (CUDA_GRAPH_BYTES if cuda_graphs else 0)


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclass(frozen=True)
class SizingInput:
    """One replica: ``tp`` GPUs of ``gpu_memory_bytes`` each, holding ``weight_bytes`` in total."""

    gpu_memory_bytes: int
    tp: int
    gpu_memory_utilization: float
    weight_bytes: int
    kv: KvShape
    max_model_len: int
    kv_cache_dtype: str = "auto"
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    cuda_graphs: bool = True
    # The least free memory among the replica's GPUs right now, memory of the replica being replaced
    # already added back; None when nothing was probed (planning from the inventory alone).
    free_memory_bytes: int | None = None
    # A KV budget pinned with --kv-cache-memory-bytes instead of derived from utilization.
    kv_cache_bytes: int | None = None


@dataclass(frozen=True)
class Sizing:
    verdict: Verdict
    reasons: tuple[str, ...]
    requested_bytes: int
    weights_per_gpu_bytes: int
    reserve_bytes: int
    kv_budget_bytes: int
    kv_bytes_per_token: int
    kv_tokens: int
    full_length_sequences: int
    max_fitting_model_len: int
    start_gate_ok: bool | None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["notes"] = list(self.notes)
        return data


def size(req: SizingInput) -> Sizing:
    """Size one replica and judge it: fits, fits with a shorter context, or does not fit."""
    per_token = kv_bytes_per_token(req.kv, req.kv_cache_dtype, req.tp)
    requested = int(req.gpu_memory_bytes * req.gpu_memory_utilization)
    weights = math.ceil(req.weight_bytes / req.tp)
    reserve = reserve_bytes(req.max_num_batched_tokens, req.cuda_graphs)
    budget = req.kv_cache_bytes if req.kv_cache_bytes is not None else requested - weights - reserve
    blocks = max(0, budget) // (per_token * BLOCK_SIZE)
    kv_tokens = blocks * BLOCK_SIZE
    full = kv_tokens // req.max_model_len
    max_fit = kv_tokens
    gate = None if req.free_memory_bytes is None else req.free_memory_bytes >= requested

    reasons: list[str] = []
    if budget <= 0 or kv_tokens == 0:
        reasons.append(
            f"weights {gib(weights)}/GPU (TP={req.tp}) + vLLM reserve {gib(reserve)} leave no KV cache "
            f"within {req.gpu_memory_utilization:.2f} x {gib(req.gpu_memory_bytes)} = {gib(requested)}"
        )
        verdict: Verdict = "does-not-fit"
    elif gate is False:
        assert req.free_memory_bytes is not None
        util = math.floor(req.free_memory_bytes / req.gpu_memory_bytes * 100) / 100
        reasons.append(
            f"only {gib(req.free_memory_bytes)} free on a GPU, vLLM needs {req.gpu_memory_utilization:.2f} x "
            f"{gib(req.gpu_memory_bytes)} = {gib(requested)} free at start: stop the other GPU processes "
            f"or lower gpu_memory_utilization to {util:.2f} or less"
        )
        verdict = "does-not-fit"
    elif kv_tokens < req.max_model_len:
        reasons.append(
            f"the KV cache holds {kv_tokens:,} tokens, fewer than max_model_len {req.max_model_len:,}: "
            f"set max_model_len to {max_fit:,} or less, use more GPUs per replica, or an fp8 KV cache"
        )
        verdict = "fits-with-reduced-context"
    else:
        reasons.append(f"{full} full-length ({req.max_model_len:,}-token) sequences fit in {kv_tokens:,} KV tokens")
        verdict = "fits"
    return Sizing(
        verdict=verdict,
        reasons=tuple(reasons),
        requested_bytes=requested,
        weights_per_gpu_bytes=weights,
        reserve_bytes=reserve,
        kv_budget_bytes=budget,
        kv_bytes_per_token=per_token,
        kv_tokens=kv_tokens,
        full_length_sequences=full,
        max_fitting_model_len=max_fit,
        start_gate_ok=gate,
    )
