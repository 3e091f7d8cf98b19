"""The GPU and model catalog: data files read into typed, frozen records.

+ ``gpu_kinds()``: every GPU kind in ``gpus.toml``, keyed by id, e.g. ``gpu_kinds()["h200-sxm"]``.
+ ``model_profiles()``: every model profile in ``models.toml``, keyed by id.
+ ``vllm_options()``: the ``vllm serve`` option table in ``vllm_options.toml``, keyed by every spelling.
+ ``vllm_routes()``: the HTTP routes vLLM's API server has for a generate model, ``vllm_routes.json``
  (written from vLLM's own app by ``scripts/vllm-routes.py``).
+ ``package_series(os_key)``: the version series the container stack is pinned to (``packages.toml``), e.g.
  ``package_series("debian12")["docker.io"] == "20.10.*"``.
"""

from __future__ import annotations

import json
import tomllib
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024**2
GIB = 1024**3


class GpuKind(BaseModel):
    """One GPU model as the toolkit needs to know it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    architecture: Literal["hopper", "blackwell"]
    memory_mib: int
    cuda_memory_bytes: int
    compute_capability: str
    pci_device_ids: tuple[str, ...]
    form_factor: Literal["sxm", "pcie"]
    nvswitch_gpu_counts: tuple[int, ...]
    nvlink5: bool
    # Per direction, GB/s (sources in gpus.toml): what the burn-in's all-reduce busbw is judged against.
    nvlink_gb_s: int
    pcie_gb_s: int
    open_kernel_modules: Literal["required", "recommended"]
    min_driver_branch: int
    fp8_native: bool
    fp4_native: bool

    @property
    def memory_bytes(self) -> int:
        """The total NVML (nvidia-smi) reports, driver reservation included."""
        return self.memory_mib * MIB

    def has_nvswitch(self, gpu_count: int) -> bool:
        """Whether a host with ``gpu_count`` of these GPUs sits on an NVSwitch baseboard."""
        return gpu_count in self.nvswitch_gpu_counts


class ModelProfile(BaseModel):
    """One servable checkpoint: what to download, how big it is, how its KV cache grows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    display_name: str
    family: str
    repo_id: str
    checkpoint: str
    weight_bytes: int
    download_bytes: int
    max_context: int
    default_max_model_len: int
    num_layers: int
    kv: Literal["mla", "gqa"]
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    # Layers that attend over a sliding window only (gpt-oss: every other layer, 128 tokens).
    sliding_window: int = 0
    sliding_window_layers: int = 0
    # The shape of one forward pass, for vLLM's profiling peak (docs/sizing.md): hidden width, vocabulary
    # (the sampler's logits), the dense or shared-expert MLP width, and the routed experts.
    hidden_size: int
    # Query heads: tensor parallel must divide them (and the KV heads, and the MoE width) for vLLM to shard.
    num_attention_heads: int
    vocab_size: int
    intermediate_size: int = 0
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    min_vllm: str
    min_mistral_common: str | None = None
    include_patterns: tuple[str, ...]
    exclude_patterns: tuple[str, ...] = ()
    tokenizer_mode: str | None = None
    config_format: str | None = None
    load_format: str | None = None
    tool_call_parser: str
    reasoning_parser: str | None = None
    reasoning_efforts: tuple[str, ...] = ()
    multimodal: bool = False
    attention_backend: str | None = None
    forbidden_attention_backends: tuple[str, ...] = ()
    served_model_name: str
    native_compute: tuple[str, ...] = Field(default=())
    min_gpus: dict[str, int] = Field(default_factory=dict)
    recommended_gpus: dict[str, int] = Field(default_factory=dict)

    def max_model_len(self, configured: int | None) -> int:
        """The context served: the host's ``max_model_len`` when set, else this profile's default."""
        return configured or self.default_max_model_len


class VllmOption(BaseModel):
    """One ``vllm serve`` option: all its spellings (long first) and how many values it takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strings: tuple[str, ...]
    nargs: Literal["0", "1", "?", "*", "+"]

    @property
    def canonical(self) -> str:
        """The long spelling, the positive one of a --x / --no-x pair."""
        return next((s for s in self.strings if s.startswith("--") and not s.startswith("--no-")), self.strings[0])


class VllmOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vllm_version: str
    allow_abbrev: bool
    options: dict[str, VllmOption]


class VllmRoute(BaseModel):
    """One route of vLLM's app: a path (``{name}`` a path parameter) and its methods; a mount answers every
    method on the path and below it (``methods`` empty)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    methods: tuple[str, ...]
    mount: bool


class VllmRoutes(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vllm_version: str
    supported_tasks: tuple[str, ...]
    # vLLM's AuthenticationMiddleware checks the key only on paths starting with one of these.
    guarded_prefixes: tuple[str, ...]
    routes: tuple[VllmRoute, ...]


def _load(name: str) -> dict[str, dict[str, object]]:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    return tomllib.loads(text)


@cache
def gpu_kinds() -> dict[str, GpuKind]:
    return {key: GpuKind(id=key, **value) for key, value in _load("gpus.toml").items()}


@cache
def model_profiles() -> dict[str, ModelProfile]:
    return {key: ModelProfile(id=key, **value) for key, value in _load("models.toml").items()}


@cache
def package_series(os_key: str) -> dict[str, str]:
    """Package name -> apt version series for the OS ``os_key`` (``ubuntu2404``) and NVIDIA's repository."""
    data = _load("packages.toml")
    return {**data["os"].get(os_key, {}), **data["nvidia"]}  # type: ignore[dict-item]


def gpu_kind_by_pci_id(device_id: str) -> GpuKind | None:
    """Map a PCI device id (``0x2335`` or ``2335``, any case) to its GPU kind."""
    wanted = "0x" + device_id.lower().removeprefix("0x")[-4:]
    return next((kind for kind in gpu_kinds().values() if wanted in kind.pci_device_ids), None)


def gpu_kind_by_name(name: str) -> GpuKind | None:
    """Map a product name as NVML or nvidia-smi reports it (``NVIDIA H200``) to its GPU kind."""
    return next((kind for kind in gpu_kinds().values() if kind.name == name.strip()), None)


@cache
def vllm_options() -> VllmOptions:
    data = _load("vllm_options.toml")
    options = [VllmOption.model_validate(row) for row in data["option"]]
    return VllmOptions(
        vllm_version=str(data["vllm_version"]),
        allow_abbrev=bool(data["allow_abbrev"]),
        options={spelling: option for option in options for spelling in option.strings},
    )


@cache
def vllm_routes() -> VllmRoutes:
    text = resources.files(__name__).joinpath("vllm_routes.json").read_text(encoding="utf-8")
    return VllmRoutes.model_validate(json.loads(text))
