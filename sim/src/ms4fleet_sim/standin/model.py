"""What the stand-in knows about the model it serves: where its files are, their size, its shape.

MODEL is a local directory or a Hugging Face repo id resolved in the local hub cache (offline, as a
pre-downloaded production host runs). The shape comes from ``params.json`` (Mistral-native) or
``config.json`` (Hugging Face, text settings possibly nested under ``text_config``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cli import StartupError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Used when a config omits a field: the values of a mid-size dense GQA model.
DEFAULT_HIDDEN = 4096
DEFAULT_LAYERS = 32
DEFAULT_KV_HEADS = 8
DEFAULT_MAX_POSITIONS = 32768
MISTRAL_DEFAULT_MAX_POSITIONS = 128_000


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the served checkpoint that drive start-up time, memory and behaviour."""

    path: Path
    architecture: str
    weight_bytes: int
    num_layers: int
    hidden_size: int
    max_position_embeddings: int
    mla: bool
    kv_lora_rank: int
    qk_rope_head_dim: int
    num_kv_heads: int
    head_dim: int
    mistral_tokenizer: bool

    def kv_bytes_per_token_per_gpu(self, dtype_bytes: int, tensor_parallel: int) -> int:
        """KV-cache bytes one token takes on each GPU.

        MLA caches the latent (kv_lora_rank + qk_rope_head_dim) once per layer as one KV head,
        replicated on every tensor-parallel rank; GQA caches K and V per KV head, split across ranks.
        """
        if self.mla:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * self.num_layers * dtype_bytes
        heads_per_gpu = max(1, self.num_kv_heads // tensor_parallel)
        return 2 * heads_per_gpu * self.head_dim * self.num_layers * dtype_bytes


def hub_cache(env: Mapping[str, str]) -> Path:
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    hf_home = env.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(hf_home) / "hub"


def resolve(model: str, revision: str | None, env: Mapping[str, str]) -> Path:
    """The directory holding MODEL's files: itself, or its snapshot in the hub cache."""
    local = Path(model)
    if local.is_dir():
        return local
    repo_dir = hub_cache(env) / ("models--" + model.replace("/", "--"))
    ref = revision or "main"
    ref_file = repo_dir / "refs" / ref
    commit = ref_file.read_text(encoding="utf-8").strip() if ref_file.is_file() else ref
    snapshot = repo_dir / "snapshots" / commit
    if snapshot.is_dir():
        return snapshot
    raise StartupError("ValueError", _invalid_model_message(model))


def _invalid_model_message(model: str) -> str:
    # vllm/transformers_utils/config.py, verbatim.
    return (
        f"Invalid repository ID or local directory specified: '{model}'.\n"
        "Please verify the following requirements:\n"
        "1. Provide a valid Hugging Face repository ID.\n"
        "2. Specify a local directory that contains a recognized configuration file.\n"
        "   - For Hugging Face models: ensure the presence of a 'config.json'.\n"
        "   - For Mistral models: ensure the presence of a 'params.json'.\n"
    )


def weight_files(path: Path, load_format: str) -> list[Path]:
    """The weight files vLLM would load: Mistral ``consolidated*`` or the Hugging Face shards.

    Mistral repos often hold both formats; vLLM loads one, so counting both would double the size.
    """
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    consolidated = [p for p in files if p.name.startswith("consolidated")]
    others = [p for p in files if not p.name.startswith("consolidated")]
    if load_format == "mistral" or (consolidated and not others):
        return consolidated
    return others


def _int(config: Mapping[str, Any], *keys: str, default: int) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def _mistral_params(params: dict[str, Any]) -> dict[str, Any]:
    """params.json keys mapped to Hugging Face names, as vllm/transformers_utils/configs/mistral.py does."""
    mapping = {
        "dim": "hidden_size",
        "n_layers": "num_hidden_layers",
        "n_heads": "num_attention_heads",
        "n_kv_heads": "num_key_value_heads",
        "head_dim": "head_dim",
        "kv_lora_rank": "kv_lora_rank",
        "qk_rope_head_dim": "qk_rope_head_dim",
    }
    out: dict[str, Any] = {hf: params[key] for key, hf in mapping.items() if key in params}
    # vLLM defaults max_position_embeddings to 128000 and derives the model length as the smallest of
    # the length keys present (max_seq_len included).
    lengths = [params.get("max_position_embeddings", MISTRAL_DEFAULT_MAX_POSITIONS)]
    if isinstance(params.get("max_seq_len"), int):
        lengths.append(params["max_seq_len"])
    out["max_position_embeddings"] = min(lengths)
    vision = bool(params.get("vision_encoder") or (params.get("multimodal") or {}).get("vision_encoder_args"))
    out["architectures"] = ["PixtralForConditionalGeneration" if vision else "MistralForCausalLM"]
    return out


def load(model: str, revision: str | None, load_format: str, env: Mapping[str, str]) -> ModelInfo:
    """Read the checkpoint's shape and weight size; vLLM's error when no config can be found."""
    path = resolve(model, revision, env)
    params_file, config_file = path / "params.json", path / "config.json"
    mistral_native = params_file.is_file() and (load_format == "mistral" or not config_file.is_file())
    if mistral_native:
        config = _mistral_params(json.loads(params_file.read_text(encoding="utf-8")))
    elif config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
    else:
        raise StartupError("ValueError", _invalid_model_message(model))
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    files = weight_files(path, "mistral" if mistral_native else load_format)
    if not files:
        raise StartupError("RuntimeError", f"Cannot find any model weights with `{model}`", engine_core=True)
    hidden = _int(text, "hidden_size", default=DEFAULT_HIDDEN)
    heads = _int(text, "num_attention_heads", default=32)
    kv_lora_rank = _int(text, "kv_lora_rank", default=0)
    architectures = config.get("architectures") or ["MistralForCausalLM"]
    return ModelInfo(
        path=path,
        architecture=str(architectures[0]),
        weight_bytes=sum(f.stat().st_size for f in files),
        num_layers=_int(text, "num_hidden_layers", default=DEFAULT_LAYERS),
        hidden_size=hidden,
        max_position_embeddings=_int(text, "max_position_embeddings", default=DEFAULT_MAX_POSITIONS),
        mla=kv_lora_rank > 0,
        kv_lora_rank=kv_lora_rank,
        qk_rope_head_dim=_int(text, "qk_rope_head_dim", default=0),
        num_kv_heads=_int(text, "num_key_value_heads", "num_attention_heads", default=DEFAULT_KV_HEADS),
        head_dim=_int(text, "head_dim", default=hidden // heads if heads else 128),
        mistral_tokenizer=(path / "tekken.json").is_file() or mistral_native,
    )


def check_max_model_len(requested: int | None, info: ModelInfo, env: Mapping[str, str]) -> None:
    """vLLM's refusal of a --max-model-len beyond the model's positions (vllm/config/model.py)."""
    derived = info.max_position_embeddings
    if requested is None or requested <= derived or env.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") in ("1", "true"):
        return
    raise StartupError(
        "ValueError",
        f"User-specified max_model_len ({requested}) is greater than the derived max_model_len "
        f"(max_position_embeddings={derived} or model_max_length=None in model's config.json). To allow "
        "overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN "
        "must be used with extreme caution. If the model uses relative position encoding (RoPE), positions "
        "exceeding derived_max_model_len lead to nan. If the model uses absolute position encoding, positions "
        "exceeding derived_max_model_len will cause a CUDA array out-of-bounds error.",
    )
