"""Name why a vLLM service failed from its journal or container log: known signatures -> cause + fix.

+ ``name_causes(text)``: every known cause found in a log, most specific first, each with the line that
  proves it and the numbers it carries (e.g. the estimated maximum model length vLLM printed).

Signatures come from what users hit with vLLM on H100/H200/B200 hosts (shared reference vllm-serving.md,
section 8). Generic engine deaths are listed after the specific causes that explain them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

# Lines longer than this are cut in the evidence (tracebacks can print whole tensors).
EVIDENCE_CHARS = 400


@dataclass(frozen=True)
class Cause:
    """One named failure: what it is, how to fix it, the log line that shows it, numbers read off it."""

    id: str
    title: str
    fix: str
    evidence: str
    details: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "fix": self.fix,
            "evidence": self.evidence,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class Signature:
    id: str
    title: str
    patterns: tuple[re.Pattern[str], ...]
    fix: str | Callable[[dict[str, str]], str]

    def render_fix(self, details: dict[str, str]) -> str:
        return self.fix(details) if callable(self.fix) else self.fix


def _kv_fix(details: dict[str, str]) -> str:
    estimated = details.get("estimated_max_model_len")
    if estimated:
        return (
            f"set max_model_len to {int(estimated):,} or less (vLLM's estimate for this memory), or free "
            "memory for the KV cache: more GPUs per replica, an fp8 KV cache, higher gpu_memory_utilization"
        )
    return "lower max_model_len, or free memory for the KV cache: more GPUs per replica or an fp8 KV cache"


def _compile(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(pattern) for pattern in patterns)


SIGNATURES: tuple[Signature, ...] = (
    Signature(
        "fabric-manager",
        "NVSwitch fabric not initialised (nvidia-fabricmanager down or a different version than the driver)",
        _compile(r"[Ee]rror 802", r"system not yet initialized", r"cudaErrorSystemNotReady"),
        "start nvidia-fabricmanager at exactly the driver's version (systemctl enable --now "
        "nvidia-fabricmanager; on Blackwell also nvlsm), then restart the service",
    ),
    Signature(
        "driver-too-old",
        "NVIDIA driver older than the CUDA the vLLM image was built for",
        _compile(
            r"NVIDIA driver on your system is too old \(found version (?P<found_version>\d+)\)",
            r"CUDA driver version is insufficient",
            r"unsatisfied condition: cuda>=(?P<required_cuda>[\d.]+)",
            r"[Ee]rror 804",
            r"forward compatibility was attempted on non supported HW",
        ),
        "upgrade the driver to a branch that supports the image's CUDA, or pin an older vLLM image",
    ),
    Signature(
        "triton-mla",
        "TRITON_MLA attention backend crashes Mistral Small 4 on the first decoded token (kv_lora_rank 256)",
        _compile(r"Cannot make_shape_compatible"),
        "do not use --attention-backend TRITON_MLA for this model: use FLASH_ATTN_MLA (the recipe default)",
    ),
    Signature(
        "attention-unsupported",
        "the attention backend cannot run this model's head size (fails on the first decode, after /health)",
        _compile(
            r"Unsupported CPU attention configuration: head_dim=(?P<head_dim>\d+)",
            r"Head size (?P<head_dim>\d+) is not supported by",
        ),
        "pick an --attention-backend that supports the model's head size (the recipe default for the model)",
    ),
    Signature(
        "start-gate",
        "other processes hold GPU memory: free memory is below gpu_memory_utilization x total at start",
        _compile(
            # vLLM 0.32 (v1/worker/utils.py) names the device ("cuda:0"); older releases did not.
            r"Free memory on device (?:\S+ )?\((?P<free_gib>[\d.]+)/(?P<total_gib>[\d.]+) GiB\) on startup is "
            r"less than (?:desired GPU memory utilization|the engine's budget after excluding external "
            r"process's weights) \((?P<utilization>[\d.]+), (?P<requested_gib>[\d.]+) GiB\)"
        ),
        "stop the other processes on these GPUs (ms4fleet probe lists them), or lower gpu_memory_utilization",
    ),
    Signature(
        "kv-cache-too-small",
        "the KV cache cannot hold one sequence of max_model_len tokens",
        _compile(
            r"max seq len \((?P<max_model_len>\d+)\).*?estimated maximum model length is "
            r"(?P<estimated_max_model_len>\d+)",
            r"estimated maximum model length is (?P<estimated_max_model_len>\d+)",
            r"The model's max seq len \((?P<max_model_len>\d+)\) is larger than the maximum number of tokens "
            r"that can be stored in KV cache \((?P<estimated_max_model_len>\d+)\)",
        ),
        _kv_fix,
    ),
    Signature(
        "no-kv-cache-memory",
        "no memory left for KV cache blocks after weights and activations",
        _compile(r"No available memory for the cache blocks"),
        "use more GPUs per replica (higher tensor parallel), raise gpu_memory_utilization, or a smaller "
        "checkpoint (NVFP4 on Blackwell)",
    ),
    Signature(
        "cuda-oom",
        "CUDA out of memory",
        _compile(r"torch\.OutOfMemoryError", r"torch\.cuda\.OutOfMemoryError", r"CUDA out of memory"),
        "run the headroom preflight (ms4fleet plan) and size for the memory actually free: lower "
        "max_num_batched_tokens or gpu_memory_utilization, or use more GPUs per replica",
    ),
    Signature(
        "shm",
        "/dev/shm too small for NCCL between tensor-parallel workers",
        _compile(
            r"Error while creating shared memory segment",
            r"NCCL WARN.*/dev/shm",
            r"No space left on device.*shm",
        ),
        "run the container with --ipc=host (or a large --shm-size)",
    ),
    Signature(
        "gated-repo",
        "the Hugging Face repository is gated and the token cannot read it",
        _compile(r"GatedRepoError", r"Cannot access gated repo", r"Access to model \S+ is restricted"),
        "use a READ token of an account that accepted the model's terms on its Hugging Face page",
    ),
    Signature(
        "address-in-use",
        "the port is already taken by another process",
        _compile(r"[Aa]ddress already in use"),
        "stop whatever listens on the port (ss -ltnp) or give this replica another port",
    ),
    Signature(
        "engine-timeout",
        "the engine did not become ready in time (slow weight loading or compilation)",
        _compile(r"Timed out waiting for engine"),
        "raise VLLM_ENGINE_READY_TIMEOUT_S (default 600 s) and the unit's TimeoutStartSec; stage weights on local NVMe",
    ),
    Signature(
        "engine-init-failed",
        "the engine failed while starting (its own error is logged before this line)",
        _compile(r"Engine core initialization failed", r"Frontend process failed during engine core initialization"),
        "read the first error above 'Engine core initialization failed' in the service log; the causes listed "
        "before this one name it when it is a known signature",
    ),
    Signature(
        "engine-dead",
        "the engine process died after the API server came up (health can pass before the first decode)",
        _compile(r"EngineDeadError", r"EngineCore encountered an issue", r"Engine core proc \S+ died"),
        "read the first error before the EngineDeadError in the service log; the check that failed shows "
        "which request killed it",
    ),
)


def name_causes(text: str) -> list[Cause]:
    """Every signature found in ``text``, in the order of ``SIGNATURES`` (specific before generic)."""
    causes = []
    for signature in SIGNATURES:
        found = _first_match(signature, text)
        if found is None:
            continue
        line, details = found
        causes.append(Cause(signature.id, signature.title, signature.render_fix(details), line, details))
    return causes


def _first_match(signature: Signature, text: str) -> tuple[str, dict[str, str]] | None:
    for pattern in signature.patterns:
        match = pattern.search(text)
        if match is None:
            continue
        start = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.end())
        line = text[start : end if end >= 0 else len(text)].strip()
        details = {key: value for key, value in match.groupdict().items() if value is not None}
        return line[:EVIDENCE_CHARS], details
    return None
