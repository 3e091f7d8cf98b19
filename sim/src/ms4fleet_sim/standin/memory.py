"""The stand-in's GPU memory model: vLLM's start-up checks and KV-cache sizing, as a small estimate.

Per GPU (rank), following vllm/v1/worker/gpu_worker.py and vllm/v1/core/kv_cache_utils.py:

* requested = ceil(total x gpu_memory_utilization); start-up fails when free < requested
  (memory held by other processes is not deducted from the request, it only lowers "free");
* non-KV = weights / TP + activation peak + non-torch memory + CUDA-graph memory, where the estimate
  used here is: activation = 2 GiB + max_num_batched_tokens x hidden_size x 80 B (4.5 GiB at 8192 x 4096,
  near the 4.8-7.4 GiB measured on H100), non-torch = 0.3 GiB, CUDA graphs = 0.5 GiB unless
  ``--enforce-eager`` (measured: 0.13-0.55 and 0.1-1 GiB; shared reference vllm-serving.md, section 3);
* KV budget = requested - non-KV, or ``--kv-cache-memory-bytes`` when given;
* KV tokens = floor(budget / (block_size x bytes per token)) x block_size.

The figures are an estimate for simulation, not a prediction of real vLLM, and deliberately independent
of ``ms4fleet.sizing`` (the image holds only the stand-in). They reserve a little less than the toolkit's
sizing does, so a replica the planner accepts also starts here, as it should on real hardware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .cli import ServeArgs, StartupError
from .model import ModelInfo

GIB = 1 << 30
NON_TORCH_BYTES = int(0.3 * GIB)
CUDA_GRAPH_BYTES = GIB // 2
ACTIVATION_BASE_BYTES = 2 * GIB
ACTIVATION_BYTES_PER_TOKEN_AND_HIDDEN = 80
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
DEFAULT_BLOCK_SIZE = 16
CONSERVING_MEMORY_URL = "https://docs.vllm.ai/en/latest/configuration/conserving_memory/"


def format_gib(amount: int) -> str:
    """vllm.utils.mem_utils.format_gib."""
    return f"{round(amount / GIB, 2)}"


@dataclass(frozen=True)
class Plan:
    """The outcome of start-up sizing, per GPU."""

    requested_bytes: int
    kv_budget_bytes: int
    kv_tokens: int
    max_model_len: int
    bytes_per_token: int

    @property
    def max_concurrency(self) -> float:
        return self.kv_tokens / self.max_model_len


def check_free_memory(gpus: list[dict[str, Any]], args: ServeArgs) -> int:
    """The bytes each rank requests; vLLM's error when a GPU it uses has too little free memory."""
    if len(gpus) < args.tensor_parallel_size:
        raise StartupError(
            "ValueError",
            f"World size ({args.tensor_parallel_size}) is larger than the number of available GPUs "
            f"({len(gpus)}) in this node. If this is intentional and you are using:\n"
            "- ray, set '--distributed-executor-backend ray'.\n"
            "- multiprocessing, set '--nnodes' appropriately.",
        )
    requested = 0
    for rank, gpu in enumerate(gpus[: args.tensor_parallel_size]):
        total = int(gpu["memory_total_bytes"])
        free = int(gpu["memory_free_bytes"])
        requested = math.ceil(total * args.gpu_memory_utilization)
        if free < requested:
            # vllm/v1/worker/utils.py request_memory(), verbatim.
            raise StartupError(
                "ValueError",
                f"Free memory on device cuda:{rank} ({format_gib(free)}/{format_gib(total)} GiB) on startup "
                f"is less than desired GPU memory utilization ({args.gpu_memory_utilization}, "
                f"{format_gib(requested)} GiB). Decrease GPU memory utilization or reduce GPU memory "
                "used by other processes.",
                engine_core=True,
            )
    return requested


def plan(requested: int, model: ModelInfo, args: ServeArgs) -> Plan:
    """KV budget and token capacity; vLLM's errors when no context of max_model_len fits."""
    dtype_bytes = 1 if args.kv_cache_dtype.startswith("fp8") else 2
    per_token = model.kv_bytes_per_token_per_gpu(dtype_bytes, args.tensor_parallel_size)
    block = args.block_size or DEFAULT_BLOCK_SIZE
    if args.kv_cache_memory_bytes is not None:
        budget = int(args.kv_cache_memory_bytes)
    else:
        batched = args.max_num_batched_tokens or DEFAULT_MAX_NUM_BATCHED_TOKENS
        activation = ACTIVATION_BASE_BYTES + batched * model.hidden_size * ACTIVATION_BYTES_PER_TOKEN_AND_HIDDEN
        graphs = 0 if args.enforce_eager else CUDA_GRAPH_BYTES
        weights = model.weight_bytes // args.tensor_parallel_size
        budget = requested - weights - activation - NON_TORCH_BYTES - graphs
    if budget <= 0:
        raise StartupError(
            "ValueError",
            "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
            "initializing the engine (this flag also controls CPU memory reservation on the CPU backend, "
            f"despite its name). See {CONSERVING_MEMORY_URL} for more details.",
            engine_core=True,
        )
    tokens = (budget // (block * per_token)) * block
    max_len = args.max_model_len
    if max_len is None:
        max_len = model.max_position_embeddings
    elif max_len == -1:
        # --max-model-len auto: the longest context that fits, capped at what the model supports.
        max_len = min(model.max_position_embeddings, tokens)
        if max_len <= 0:
            raise StartupError(
                "ValueError",
                "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
                "initializing the engine (this flag also controls CPU memory reservation on the CPU "
                f"backend, despite its name). See {CONSERVING_MEMORY_URL} for more details.",
                engine_core=True,
            )
    needed = math.ceil(max_len / block) * block * per_token
    if needed > budget:
        estimated = tokens
        estimated_msg = (
            f"Based on the available memory, the estimated maximum model length is {estimated}. "
            if estimated > 0
            else ""
        )
        # vllm/v1/core/kv_cache_utils.py _check_enough_kv_cache_memory(), verbatim.
        raise StartupError(
            "ValueError",
            f"To serve at least one request with the model's max seq len ({max_len}), "
            f"({format_gib(needed)} GiB KV cache is needed, which is larger than the available KV cache "
            f"memory ({format_gib(budget)} GiB). {estimated_msg}Try increasing `gpu_memory_utilization` "
            "(which also controls CPU memory on the CPU backend) or decreasing `max_model_len` when "
            f"initializing the engine. See {CONSERVING_MEMORY_URL} for more details.",
            engine_core=True,
        )
    return Plan(
        requested_bytes=requested,
        kv_budget_bytes=budget,
        kv_tokens=tokens,
        max_model_len=max_len,
        bytes_per_token=per_token,
    )
