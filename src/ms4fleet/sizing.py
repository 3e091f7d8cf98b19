"""GPU memory model for vLLM: what is left for the KV cache, how many tokens it holds, and whether a
model fits. Every term is explained, with its source and its calibration, in docs/sizing.md.

+ ``kv_bytes_per_token``: e.g. Mistral Small 4 in BF16 -> 23,040 B on every TP rank.
+ ``reserve``: what vLLM keeps per GPU besides weights and KV cache (activation peak, non-torch memory,
  CUDA-graph estimate), from the model's shape, the scheduler limits and the vLLM release.
+ ``size``: one replica on one GPU kind -> a ``Sizing`` with a verdict a person can act on; the verdict
  keeps ``VERDICT_MARGIN_BYTES`` in hand so that "fits" is never the unsafe side of vLLM's own figure.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from ms4fleet.catalog import GIB, ModelProfile

_T = TypeVar("_T")
Verdict = Literal["fits", "fits-with-reduced-context", "does-not-fit"]
KvCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16"]

# vLLM allocates the KV cache in blocks of this many tokens (its default --block-size on CUDA).
BLOCK_SIZE = 16
# Activations are BF16/FP16 whatever the weights' quantization.
ACTIVATION_DTYPE_BYTES = 2

# The sampler's share of the profiling peak, per (request x vocabulary entry) of the dummy batch: fp32
# logits plus the softmax/sort temporaries. 35.4 B before vLLM 0.17 (v0.11: Llama-3.1-8B 4.76 GiB, Qwen3
# 5.56, gpt-oss 7.38 at 1024 requests), 14.2 B from 0.17 on (v0.19: Llama 1.89, Qwen 2.21, Gemma 3.62,
# gpt-oss 2.87; a Qwen3-14B sweep drops from 5.64 to 2.23 GiB between 0.16 and 0.17).
SAMPLER_BYTES_PER_LOGIT: dict[tuple[int, int], float] = {(0, 0): 35.4, (0, 17): 14.2}
# What the profiling peak holds besides the sampler and the forward pass (input buffers, attention
# workspaces): the intercept of the same fits, 0.43 GiB before 0.17 and 0.16 GiB after.
ACTIVATION_BASE_BYTES: dict[tuple[int, int], int] = {(0, 0): int(0.43 * GIB), (0, 17): int(0.16 * GIB)}
# Multimodal models profile their encoder too: Mistral 3.1 and Gemma 3 peak 0.1-0.3 GiB above the text formula.
MULTIMODAL_ENCODER_BYTES = int(0.3 * GIB)
# Memory allocated outside PyTorch during profiling (cuBLAS/cuBLASLt workspaces; NCCL and custom
# all-reduce buffers when TP > 1): 0.24-0.27 GiB on one GPU, 2.06-2.21 GiB per GPU at TP 2-4 (vLLM 0.19,
# H100). Taken at the top of each range.
NON_TORCH_BYTES = int(0.30 * GIB)
NON_TORCH_TP_BYTES = int(2.25 * GIB)
# From vLLM 0.21 the CUDA-graph pool is estimated before the KV cache is sized and subtracted from it
# (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS). Estimates measured on H100 for 24-80 layer models: 0.52-1.82
# GiB; 1 GiB + 0.01 GiB per layer covers all but three of them by at most 0.37 GiB (kept by the margin).
CUDA_GRAPH_BASE_BYTES = 1 * GIB
CUDA_GRAPH_BYTES_PER_LAYER = int(0.01 * GIB)
CUDA_GRAPHS_PROFILED_FROM = (0, 21)
# The CUDA context vLLM creates before checking free memory: 620.8 MiB measured on the H200 (torch 2.11,
# CUDA 13, tests/data/h200/2026-12-02/cuda-memory.txt). Free memory must cover it plus the request.
CUDA_CONTEXT_BYTES = 650_969_088
# What the verdict keeps in hand: the largest amount by which the model over-predicted vLLM's KV budget on
# the public calibration set (tests/data/sizing/calibration.toml: +1.55 GiB, gpt-oss-120b at vLLM 0.11,
# vllm#27508), rounded up. "fits" means it fits with this much to spare; `ms4fleet plan` prints it.
VERDICT_MARGIN_BYTES = int(1.6 * GIB)
# ms4fleet passes --max-num-batched-tokens explicitly; this is also vLLM's `vllm serve` default on every
# GPU in the catalog (see vllm_default_max_num_batched_tokens).
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192


def _version(vllm_version: str | None) -> tuple[int, int]:
    """(major, minor) of a vLLM release like ``0.19.0`` or ``v0.21.1rc1``; None means the current one."""
    if vllm_version is None:
        return (99, 0)
    found = re.match(r"v?(\d+)\.(\d+)", vllm_version.strip())
    if not found:
        raise ValueError(f"vLLM version {vllm_version!r} is not like 0.21.0")
    return int(found[1]), int(found[2])


def _for_version(table: dict[tuple[int, int], _T], version: tuple[int, int]) -> _T:
    return table[max(since for since in table if since <= version)]


def vllm_default_max_num_batched_tokens(cuda_memory_bytes: int, gpu_name: str = "", offline: bool = False) -> int:
    """vLLM's own default when --max-num-batched-tokens is not given (EngineArgs.get_batch_defaults): GPUs
    with 70 GiB or more (CUDA total), A100 excepted, get 8192 for `vllm serve` (16384 offline), the rest
    2048 (8192 offline)."""
    large = cuda_memory_bytes >= 70 * GIB and "a100" not in gpu_name.lower()
    if large:
        return 16384 if offline else 8192
    return 8192 if offline else 2048


def vllm_default_max_num_seqs(cuda_memory_bytes: int, gpu_name: str = "") -> int:
    """vLLM's default --max-num-seqs, by the same GPU classes: 1024 on large GPUs, 256 elsewhere."""
    return 1024 if cuda_memory_bytes >= 70 * GIB and "a100" not in gpu_name.lower() else 256


@dataclass(frozen=True)
class KvShape:
    """What one token costs in the KV cache: the attention kind and its dimensions. ``sliding_layers`` of
    the ``num_layers`` attend over the last ``sliding_window`` tokens only."""

    kind: Literal["mla", "gqa"]
    num_layers: int
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    sliding_window: int = 0
    sliding_layers: int = 0

    @classmethod
    def from_profile(cls, profile: ModelProfile) -> KvShape:
        return _from_profile(cls, profile, kind="kv", sliding_layers="sliding_window_layers")

    @classmethod
    def from_model_config(cls, config: dict[str, Any]) -> KvShape:
        """Read a Hugging Face ``config.json`` (or a Mistral-native ``params.json``).

        Multimodal configs keep the language model under ``text_config``; MLA models carry
        ``kv_lora_rank``; GQA models default ``num_key_value_heads`` to the attention heads and
        ``head_dim`` to hidden size / heads, as transformers does. Sliding-window layers come from
        ``layer_types`` (gpt-oss, Gemma 3), else ``sliding_window_pattern`` (every Nth layer is global).
        """
        cfg = _text_config(config)
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
        window, sliding = _sliding_layers(cfg, layers)
        return cls(
            kind="gqa",
            num_layers=layers,
            num_kv_heads=int(kv_heads),
            head_dim=int(head_dim),
            sliding_window=window,
            sliding_layers=sliding,
        )


def _from_profile(cls: type[_T], profile: ModelProfile, **renamed: str) -> _T:
    """A shape read from the catalog: each field is the profile's attribute of that name (or of ``renamed``'s)."""
    return cls(**{f.name: getattr(profile, renamed.get(f.name, f.name)) for f in fields(cls)})  # type: ignore[arg-type]


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, dict) else config


def _sliding_layers(cfg: dict[str, Any], layers: int) -> tuple[int, int]:
    window = cfg.get("sliding_window")
    if not isinstance(window, int) or window <= 0 or cfg.get("use_sliding_window") is False:
        return 0, 0
    types = cfg.get("layer_types")
    if isinstance(types, list):
        count = sum(1 for kind in types if kind == "sliding_attention")
    elif isinstance(cfg.get("sliding_window_pattern"), int) and cfg["sliding_window_pattern"] > 0:
        count = layers - layers // int(cfg["sliding_window_pattern"])
    else:
        count = layers
    return (window, count) if count else (0, 0)


@dataclass(frozen=True)
class ModelShape:
    """The widths of one forward pass that vLLM's profiling run allocates for."""

    hidden_size: int
    vocab_size: int
    num_layers: int
    intermediate_size: int = 0  # dense MLP, or the shared experts of an MoE
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    multimodal: bool = False

    @classmethod
    def from_profile(cls, profile: ModelProfile) -> ModelShape:
        return _from_profile(cls, profile)

    @classmethod
    def from_model_config(cls, config: dict[str, Any]) -> ModelShape:
        """Read the widths from a Hugging Face ``config.json`` (Mistral-native ``params.json`` names too).

        Routed experts: ``num_local_experts`` (Mixtral, gpt-oss, whose experts use ``intermediate_size``),
        ``num_experts`` (Qwen MoE) or ``n_routed_experts`` (DeepSeek); shared experts add
        ``n_shared_experts x moe_intermediate_size`` or ``shared_expert_intermediate_size``.
        """
        cfg = _text_config(config)
        hidden = cfg.get("hidden_size", cfg.get("dim"))
        vocab = cfg.get("vocab_size") or config.get("vocab_size")
        layers = cfg.get("num_hidden_layers", cfg.get("n_layers"))
        if not hidden or not vocab or not layers:
            raise ValueError("model config lacks hidden_size, vocab_size or num_hidden_layers")
        moe: dict[str, Any] = cfg["moe"] if isinstance(cfg.get("moe"), dict) else {}
        experts = int(
            cfg.get("num_local_experts")
            or cfg.get("n_routed_experts")
            or cfg.get("num_experts")
            or moe.get("num_experts")
            or 0
        )
        per_token = int(cfg.get("num_experts_per_tok") or moe.get("num_experts_per_tok") or 0)
        dense = int(cfg.get("intermediate_size", cfg.get("hidden_dim", 0)) or 0)
        moe_width = int(cfg.get("moe_intermediate_size") or moe.get("moe_intermediate_size") or 0)
        if experts and not moe_width:  # Mixtral, gpt-oss: the experts are the MLP
            moe_width, dense = dense, 0
        shared = (
            int(cfg.get("shared_expert_intermediate_size") or 0)
            or int(cfg.get("n_shared_experts") or moe.get("num_shared_experts") or 0) * moe_width
        )
        first_dense = int(cfg.get("first_k_dense_replace") or 0)
        return cls(
            hidden_size=int(hidden),
            vocab_size=int(vocab),
            num_layers=int(layers),
            intermediate_size=max(shared, dense if (not experts or first_dense) else 0),
            num_experts=experts,
            experts_per_token=per_token if experts else 0,
            moe_intermediate_size=moe_width if experts else 0,
            multimodal=any(key in config for key in ("vision_config", "vision_encoder")),
        )


def kv_dtype_bytes(kv_cache_dtype: str) -> int:
    """Bytes per cached element: ``auto`` keeps the model's BF16, any fp8 variant halves it."""
    return 1 if kv_cache_dtype.startswith("fp8") else 2


def kv_bytes_per_token_per_layer(shape: KvShape, kv_cache_dtype: str = "auto", tp: int = 1) -> int:
    """KV bytes of one token in one attention layer, on each GPU (see ``kv_bytes_per_token``)."""
    width = kv_dtype_bytes(kv_cache_dtype)
    if shape.kind == "mla":
        return (shape.kv_lora_rank + shape.qk_rope_head_dim) * width
    heads_per_rank = max(1, math.ceil(shape.num_kv_heads / tp))
    return 2 * heads_per_rank * shape.head_dim * width


def kv_bytes_per_token(shape: KvShape, kv_cache_dtype: str = "auto", tp: int = 1) -> int:
    """KV-cache bytes one token takes on EACH GPU of a replica, all layers counted as full attention.

    MLA caches the compressed latent plus the rope key, and vLLM replicates it on every TP rank
    (it treats the latent as a single KV head, vllm#47929): TP does not divide it. GQA splits KV heads
    across ranks; when there are fewer KV heads than ranks vLLM replicates them, so a rank never holds
    less than one head.
    """
    return kv_bytes_per_token_per_layer(shape, kv_cache_dtype, tp) * shape.num_layers


def sequence_kv_bytes(
    shape: KvShape, tokens: int, kv_cache_dtype: str = "auto", tp: int = 1, max_num_batched_tokens: int = 0
) -> int:
    """KV bytes one sequence of ``tokens`` needs per GPU, in whole blocks, as vLLM's start check counts it
    (``max_memory_usage_bytes``): full-attention layers hold every token; a sliding-window layer holds at
    most the window plus one scheduler step (``cdiv(window - 1 + max_num_batched_tokens, 16) + 1`` blocks).
    """
    page = BLOCK_SIZE * kv_bytes_per_token_per_layer(shape, kv_cache_dtype, tp)
    blocks = math.ceil(tokens / BLOCK_SIZE)
    sliding_blocks = blocks
    if shape.sliding_layers:
        sliding_blocks = min(blocks, math.ceil((shape.sliding_window - 1 + max_num_batched_tokens) / BLOCK_SIZE) + 1)
    full_layers = shape.num_layers - shape.sliding_layers
    return page * (full_layers * blocks + shape.sliding_layers * sliding_blocks)


@dataclass(frozen=True)
class Reserve:
    """What vLLM keeps on each GPU besides weights and KV cache, term by term (bytes)."""

    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.activation_bytes + self.non_torch_bytes + self.cuda_graph_bytes


def activation_bytes(
    model: ModelShape,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    tp: int = 1,
    vllm_version: str | None = None,
) -> int:
    """PyTorch's peak during vLLM's profiling run, which pushes ``max_num_batched_tokens`` tokens through
    the model as ``min(max_num_seqs, tokens)`` requests, then samples one token for each:

    base + max(sampler, dense forward) + MoE workspace (+ the encoder of a multimodal model), where
    sampler = requests x vocabulary x bytes per logit; dense forward = tokens x 2 B x (6 hidden + 3 MLP
    width / TP) (residual, norm, attention in/out, gate-up and activation); MoE workspace = tokens x top-k x
    2 B x (max(2 expert width / TP, hidden) + expert width / TP) (fused-MoE intermediate caches, kept for
    the whole run).
    """
    version = _version(vllm_version)
    tokens = max_num_batched_tokens
    requests = min(max_num_seqs, tokens)
    sampler = requests * model.vocab_size * _for_version(SAMPLER_BYTES_PER_LOGIT, version)
    dense = tokens * ACTIVATION_DTYPE_BYTES * (6 * model.hidden_size + 3 * math.ceil(model.intermediate_size / tp))
    moe = 0
    if model.num_experts:
        width = math.ceil(model.moe_intermediate_size / tp)
        moe = tokens * model.experts_per_token * ACTIVATION_DTYPE_BYTES * (max(2 * width, model.hidden_size) + width)
    encoder = MULTIMODAL_ENCODER_BYTES if model.multimodal else 0
    return _for_version(ACTIVATION_BASE_BYTES, version) + math.ceil(max(sampler, dense)) + moe + encoder


def reserve(
    model: ModelShape,
    *,
    tp: int,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    cuda_graphs: bool = True,
    vllm_version: str | None = None,
) -> Reserve:
    """Activation peak, non-torch memory and, where this vLLM subtracts it, the CUDA-graph estimate."""
    graphs = 0
    if cuda_graphs and _version(vllm_version) >= CUDA_GRAPHS_PROFILED_FROM:
        graphs = CUDA_GRAPH_BASE_BYTES + CUDA_GRAPH_BYTES_PER_LAYER * model.num_layers
    return Reserve(
        activation_bytes=activation_bytes(model, max_num_batched_tokens, max_num_seqs, tp, vllm_version),
        non_torch_bytes=NON_TORCH_TP_BYTES if tp > 1 else NON_TORCH_BYTES,
        cuda_graph_bytes=graphs,
    )


def safetensors_weight_bytes(paths: Iterable[Path]) -> int:
    """Tensor bytes of a checkpoint: ``metadata.total_size`` of a ``*.safetensors.index.json``, or the sum of
    every tensor's ``data_offsets`` span in ``*.safetensors`` headers (8-byte length, then JSON)."""
    total = 0
    for path in paths:
        if path.name.endswith(".index.json"):
            total += int(json.loads(path.read_text(encoding="utf-8"))["metadata"]["total_size"])
            continue
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        total += sum(
            int(entry["data_offsets"][1]) - int(entry["data_offsets"][0])
            for name, entry in header.items()
            if name != "__metadata__"
        )
    return total


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclass(frozen=True)
class SizingInput:
    """One replica: ``tp`` GPUs of ``gpu_memory_bytes`` each (the CUDA total), holding ``weight_bytes`` in
    total. ``model`` gives the activation terms; ``max_num_seqs`` None means vLLM's default for the GPU;
    ``vllm_version`` None means the current release (CUDA graphs profiled, the 0.17+ sampler)."""

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
    model: ModelShape | None = None
    max_num_seqs: int | None = None
    vllm_version: str | None = None
    gpu_name: str = ""


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
    activation_bytes: int = 0
    non_torch_bytes: int = 0
    cuda_graph_bytes: int = 0
    margin_bytes: int = 0
    # The CUDA total of one GPU the replica runs on (what the split below divides).
    gpu_memory_bytes: int = 0

    def gpu_memory(self) -> dict[str, int]:
        """Where each GPU of the replica's memory goes, in bytes, summing to ``total``: the weights' shard,
        vLLM's reserve term by term, the KV cache (its ``kv_margin`` part is allocated but not counted in
        ``kv_tokens``), and what is left ``free`` (beyond ``gpu_memory_utilization``, or past a pinned KV
        budget). ``over``: by how much weights and reserve exceed what vLLM may take (does-not-fit)."""
        kv = max(self.kv_budget_bytes, 0)
        used = self.weights_per_gpu_bytes + self.reserve_bytes + kv
        return {
            "total": self.gpu_memory_bytes,
            "requested": self.requested_bytes,
            "weights": self.weights_per_gpu_bytes,
            "activation": self.activation_bytes,
            "non_torch": self.non_torch_bytes,
            "cuda_graphs": self.cuda_graph_bytes,
            "kv_cache": kv,
            "kv_margin": min(self.margin_bytes, kv),
            "free": max(self.gpu_memory_bytes - used, 0),
            "over": max(-self.kv_budget_bytes, 0),
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["notes"] = list(self.notes)
        data["gpu_memory"] = self.gpu_memory()
        return data


def _fallback_model(kv: KvShape) -> ModelShape:
    # No model shape known (``ms4fleet size`` on a bare KV config): a wide dense model with a large
    # vocabulary, so the activation term errs high (safe) rather than low.
    return ModelShape(hidden_size=8192, vocab_size=262144, num_layers=kv.num_layers, intermediate_size=32768)


def size(req: SizingInput) -> Sizing:
    """Size one replica and judge it: fits, fits with a shorter context, or does not fit.

    The KV budget is vLLM's (requested - weights - reserve); token counts and the verdict use the budget
    less ``VERDICT_MARGIN_BYTES``, so they hold even where the reserve model errs low by that much. A
    pinned budget (``kv_cache_bytes``) is exact and keeps no margin.
    """
    per_layer = kv_bytes_per_token_per_layer(req.kv, req.kv_cache_dtype, req.tp)
    per_token = per_layer * req.kv.num_layers
    requested = int(req.gpu_memory_bytes * req.gpu_memory_utilization)
    weights = math.ceil(req.weight_bytes / req.tp)
    seqs = req.max_num_seqs or vllm_default_max_num_seqs(req.gpu_memory_bytes, req.gpu_name)
    terms = reserve(
        req.model or _fallback_model(req.kv),
        tp=req.tp,
        max_num_batched_tokens=req.max_num_batched_tokens,
        max_num_seqs=seqs,
        cuda_graphs=req.cuda_graphs,
        vllm_version=req.vllm_version,
    )
    pinned = req.kv_cache_bytes is not None
    budget = req.kv_cache_bytes if req.kv_cache_bytes is not None else requested - weights - terms.total_bytes
    margin = 0 if pinned else VERDICT_MARGIN_BYTES
    usable = max(0, budget - margin)
    blocks = usable // (per_token * BLOCK_SIZE)
    need = sequence_kv_bytes(req.kv, req.max_model_len, req.kv_cache_dtype, req.tp, req.max_num_batched_tokens)
    if req.kv.sliding_layers:
        full = usable // need
        kv_tokens = usable * req.max_model_len // need
        max_fit = _longest_sequence(req, usable, per_layer)
    else:
        kv_tokens = blocks * BLOCK_SIZE
        full = kv_tokens // req.max_model_len
        max_fit = kv_tokens
    gate = None
    if req.free_memory_bytes is not None:
        gate = req.free_memory_bytes - CUDA_CONTEXT_BYTES >= requested

    reasons: list[str] = []
    if usable <= 0 or blocks == 0:
        reasons.append(
            f"weights {gib(weights)}/GPU (TP={req.tp}), vLLM's reserve {gib(terms.total_bytes)} and the margin "
            f"{gib(margin)} exceed {req.gpu_memory_utilization:.2f} x {gib(req.gpu_memory_bytes)} = {gib(requested)}"
        )
        verdict: Verdict = "does-not-fit"
    elif gate is False:
        assert req.free_memory_bytes is not None
        util = math.floor((req.free_memory_bytes - CUDA_CONTEXT_BYTES) / req.gpu_memory_bytes * 100) / 100
        reasons.append(
            f"only {gib(req.free_memory_bytes)} free on a GPU, vLLM needs {req.gpu_memory_utilization:.2f} x "
            f"{gib(req.gpu_memory_bytes)} = {gib(requested)} free at start (plus its CUDA context): stop "
            f"the other GPU processes or lower gpu_memory_utilization to {util:.2f} or less"
        )
        verdict = "does-not-fit"
    elif need > usable:
        reasons.append(
            f"the KV cache holds {kv_tokens:,} tokens, too few for one max_model_len {req.max_model_len:,} "
            f"sequence: set max_model_len to {max_fit:,} or less, use more GPUs per replica, or an fp8 KV cache"
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
        reserve_bytes=terms.total_bytes,
        kv_budget_bytes=budget,
        kv_bytes_per_token=per_token,
        kv_tokens=kv_tokens,
        full_length_sequences=full,
        max_fitting_model_len=max_fit,
        start_gate_ok=gate,
        activation_bytes=terms.activation_bytes,
        non_torch_bytes=terms.non_torch_bytes,
        cuda_graph_bytes=terms.cuda_graph_bytes,
        margin_bytes=margin,
        gpu_memory_bytes=req.gpu_memory_bytes,
    )


def _longest_sequence(req: SizingInput, usable: int, per_layer: int) -> int:
    """The longest max_model_len whose one sequence fits in ``usable`` bytes (vLLM's "estimated maximum
    model length"), in whole blocks."""
    full_layers = req.kv.num_layers - req.kv.sliding_layers

    def fits(blocks: int) -> bool:
        need = sequence_kv_bytes(req.kv, blocks * BLOCK_SIZE, req.kv_cache_dtype, req.tp, req.max_num_batched_tokens)
        return need <= usable

    # A sequence grows by at least one full-attention page per block, which bounds the search.
    low, high = 0, usable // (per_layer * BLOCK_SIZE * max(1, full_layers)) + 1
    while low < high:  # the largest block count whose one sequence fits
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low * BLOCK_SIZE
