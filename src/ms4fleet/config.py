"""Typed host configuration: what an inventory may say about a GPU host, validated against the catalog.

Inventories (pyinfra or Ansible) carry one top-level key per section: ``ms4fleet_gpu``,
``ms4fleet_serving``, ``ms4fleet_runtime``, ``ms4fleet_weights``, ``ms4fleet_provision``. Each is a mapping
that replaces, not merges, the same key set at a broader level (all < group < host), in both engines.

+ ``HostConfig.from_host_data(name, data)``: e.g. ``HostConfig.from_host_data("gpu-1", {"ms4fleet_gpu":
  {"kind": "h200-sxm", "count": 8}})``; raises ``ConfigError`` whose message names host and field.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ms4fleet import paths
from ms4fleet.catalog import GpuKind, ModelProfile, gpu_kinds, model_profiles

SECTIONS = ("gpu", "serving", "runtime", "weights", "provision")
KEY_PREFIX = "ms4fleet_"
# The share of each GPU vLLM may take unless the host sets one (headroom and `ms4fleet size` default to it too).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL)", re.IGNORECASE)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([.+-][0-9A-Za-z.]+)?$")
# Flags ms4fleet derives itself; setting them through extra_args would fork the decision.
_MANAGED_FLAGS = frozenset(
    {
        "--port",
        "--host",
        "--api-key",
        "--tensor-parallel-size",
        "-tp",
        "--served-model-name",
        "--max-model-len",
        "--gpu-memory-utilization",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--kv-cache-dtype",
        "--attention-backend",
        "--tokenizer-mode",
        "--config-format",
        "--load-format",
        "--tool-call-parser",
        "--reasoning-parser",
        "--enable-auto-tool-choice",
    }
)


class ConfigError(ValueError):
    """Invalid configuration. ``str(err)`` is one line: ``host: field=value problem; what to do``."""

    def __init__(self, host: str, field: str, message: str) -> None:
        self.host = host
        self.field = field
        sep = "" if message.startswith("=") else " "
        super().__init__(f"{host}: {field}{sep}{message}" if field else f"{host}: {message}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Section):
    """A secret BY REFERENCE: a file on the host, or an environment variable of the deploying process."""

    file: str | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.file is None) == (self.env is None):
            raise ValueError("must name exactly one of file (a path on the host) or env (a variable name)")
        if self.file is not None and not self.file.startswith("/"):
            raise ValueError(f"file {self.file!r} must be an absolute path on the host")
        if self.env is not None and not _ENV_NAME.match(self.env):
            raise ValueError(f"env {self.env!r} is not an environment variable name")
        return self


def _secret_ref(value: Any) -> Any:
    # A bare string here is the secret itself pasted into the inventory: refuse it loudly.
    if isinstance(value, str):
        raise ValueError(
            "is given by value: secrets are referenced, never inlined; "
            'use {"file": "/etc/ms4fleet/<name>"} or {"env": "VARIABLE"}'
        )
    return value


class GpuSpec(_Section):
    kind: str
    count: Annotated[int, Field(ge=1, le=16)]

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in gpu_kinds():
            known = ", ".join(gpu_kinds())
            raise ValueError(f"is not a known GPU kind{_did_you_mean(kind, gpu_kinds())} (known: {known})")
        return kind

    @property
    def gpu(self) -> GpuKind:
        return gpu_kinds()[self.kind]


class ReplicaSpec(_Section):
    """An explicit replica layout entry: which GPU indices, which port."""

    gpus: list[Annotated[int, Field(ge=0)]]
    port: Annotated[int, Field(ge=1, le=65535)]


class ServingConfig(_Section):
    model: str = "mistral-small-4"
    checkpoint: Literal["fp8", "nvfp4", "mxfp4", "bf16"] | None = None
    tensor_parallel_size: Annotated[int, Field(ge=1, le=16)] | None = None
    max_model_len: Annotated[int, Field(ge=256)] | None = None
    max_num_seqs: Annotated[int, Field(ge=1, le=4096)] = 64
    max_num_batched_tokens: Annotated[int, Field(ge=256, le=1_048_576)] = 8192
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    port: Annotated[int, Field(ge=1024, le=65535)] = 8000
    bind_address: str = "127.0.0.1"
    served_model_name: str | None = None
    attention_backend: str | None = None
    default_reasoning_effort: str | None = None
    replicas: list[ReplicaSpec] | None = None
    api_key: SecretRef | None = None
    env: dict[str, str] = Field(default_factory=dict)
    extra_args: list[str] = Field(default_factory=list)

    _api_key_ref = field_validator("api_key", mode="before")(_secret_ref)

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _utilization(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"={value} must be in (0, 1]: the share of each GPU's memory vLLM may take")
        return value

    @field_validator("bind_address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"={value!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)") from None
        return value

    @field_validator("env")
    @classmethod
    def _no_secret_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"key {name!r} is not an environment variable name")
            if _SECRET_NAME.search(name):
                raise ValueError(
                    f"key {name!r} looks like a secret given by value: reference it with "
                    "serving.api_key or weights.hf_token instead"
                )
        return env

    @field_validator("extra_args")
    @classmethod
    def _unmanaged(cls, args: list[str]) -> list[str]:
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag in _MANAGED_FLAGS:
                raise ValueError(f"sets {flag}, which ms4fleet derives: use the serving.* setting instead")
        return args


class RuntimeConfig(_Section):
    kind: Literal["docker", "native"] = "docker"
    image: str = "vllm/vllm-openai:v0.32.0"
    vllm_version: str = "0.32.0"
    venv: str = "/opt/ms4fleet/vllm"
    shm_size: str | None = None

    @field_validator("image")
    @classmethod
    def _pinned_image(cls, image: str) -> str:
        if _DIGEST.search(image):
            return image
        name, _, tag = image.rpartition(":")
        if not name or "/" in tag or tag in {"", "latest"}:
            raise ValueError(
                f"={image!r} is not pinned: name a release tag (vllm/vllm-openai:v0.32.0) or a digest (@sha256:...)"
            )
        return image

    @field_validator("vllm_version")
    @classmethod
    def _pinned_version(cls, version: str) -> str:
        if not _VERSION.match(version):
            raise ValueError(f"={version!r} must be an exact version such as 0.32.0")
        return version


class WeightsConfig(_Section):
    source: Literal["hub", "mirror", "path"] = "hub"
    revision: str | None = None
    dir: str = paths.WEIGHTS_ROOT
    mirror_url: str | None = None
    path: str | None = None
    hf_token: SecretRef | None = None

    _hf_token_ref = field_validator("hf_token", mode="before")(_secret_ref)

    @field_validator("dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"={value!r} must be an absolute path")
        return value.rstrip("/") or "/"

    @model_validator(mode="after")
    def _source_fields(self) -> WeightsConfig:
        # Every source is laid out per revision (one directory per pin), so every source names one.
        if self.revision is None or (self.source == "hub" and not _COMMIT.match(self.revision)):
            raise _FieldError(
                "revision",
                f"={self.revision!r} is not pinned: use a 40-character commit hash "
                "(the model's 'Files and versions' history)",
            )
        if self.source == "hub" and self.hf_token is None:
            raise _FieldError(
                "hf_token",
                "is missing: the model is gated; reference a READ token with "
                '{"file": "/etc/ms4fleet/hf-token"} or {"env": "HF_TOKEN"}',
            )
        if self.source == "mirror" and not (self.mirror_url or "").startswith(("http://", "https://")):
            raise _FieldError("mirror_url", "must be an http(s):// URL when source is mirror")
        if self.source == "path" and not (self.path or "").startswith("/"):
            raise _FieldError("path", "must be an absolute path when source is path")
        return self


class AptRepo(_Section):
    """An apt repository in deb822 form, trusted only through its own keyring."""

    url: str
    suite: str
    components: list[str] = Field(default_factory=list)
    key_url: str

    @field_validator("url", "key_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "file:/")):
            raise ValueError(f"={value!r} must be an http(s):// or file:/ URL")
        return value


class ProvisionConfig(_Section):
    manage_driver: bool = True
    driver_branch: Annotated[int, Field(ge=470, le=999)] = 580
    driver_version: str = "580.95.05"
    cuda_toolkit: str = "13-0"
    persistence_mode: bool = True
    reboot: Literal["auto", "never"] = "auto"
    nvidia_apt_repo: AptRepo | None = None
    docker_daemon_options: dict[str, Any] = Field(default_factory=dict)
    service_user: str = "ms4fleet"

    @model_validator(mode="after")
    def _version_in_branch(self) -> ProvisionConfig:
        if not self.driver_version.startswith(f"{self.driver_branch}."):
            raise _FieldError(
                "driver_version",
                f"={self.driver_version!r} is not on driver_branch {self.driver_branch}: "
                "pin a version of that branch (fabric manager is pinned to it too)",
            )
        return self


class HostConfig(_Section):
    """Everything ms4fleet needs to decide about one host."""

    name: str
    gpu: GpuSpec
    serving: ServingConfig = Field(default_factory=ServingConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    # Optional for planning and sizing; the engines require it before fetching or serving.
    weights: WeightsConfig | None = None
    provision: ProvisionConfig = Field(default_factory=ProvisionConfig)

    @property
    def profile(self) -> ModelProfile:
        return resolve_profile(self.serving.model, self.serving.checkpoint)

    @model_validator(mode="after")
    def _against_catalog(self) -> HostConfig:
        try:
            profile = self.profile
        except KeyError as err:
            raise _FieldError("serving.model", str(err.args[0])) from None
        serving = self.serving
        family = profile.family
        if serving.max_model_len is not None and serving.max_model_len > profile.max_context:
            raise _FieldError(
                "serving.max_model_len",
                f"={serving.max_model_len} exceeds {family}'s {profile.max_context}",
            )
        tp = serving.tensor_parallel_size
        if tp is not None and tp > self.gpu.count:
            raise _FieldError(
                "serving.tensor_parallel_size",
                f"={tp} is more than the host's {self.gpu.count} GPUs",
            )
        if tp is not None and self.gpu.count % tp:
            raise _FieldError(
                "serving.tensor_parallel_size",
                f"={tp} does not divide the host's {self.gpu.count} GPUs: every GPU serves a replica",
            )
        effort = serving.default_reasoning_effort
        if effort is not None and effort not in profile.reasoning_efforts:
            allowed = "|".join(profile.reasoning_efforts) or "nothing (no reasoning parser)"
            raise _FieldError(
                "serving.default_reasoning_effort",
                f"={effort!r}: {family} accepts {allowed}",
            )
        backend = serving.attention_backend
        if backend is not None and backend.upper() in profile.forbidden_attention_backends:
            raise _FieldError(
                "serving.attention_backend",
                f"={backend!r} crashes {family} on the first decode (kv_lora_rank 256, vllm#40260): "
                f"leave it unset or use {profile.attention_backend}",
            )
        if serving.replicas is not None:
            self._check_replicas(serving.replicas)
        return self

    def _check_replicas(self, replicas: list[ReplicaSpec]) -> None:
        seen_gpus: set[int] = set()
        seen_ports: set[int] = set()
        for i, replica in enumerate(replicas):
            where = f"serving.replicas[{i}]"
            for index in replica.gpus:
                if index >= self.gpu.count:
                    raise _FieldError(f"{where}.gpus", f"names GPU {index}; the host has 0..{self.gpu.count - 1}")
                if index in seen_gpus:
                    raise _FieldError(f"{where}.gpus", f"reuses GPU {index}, already in another replica")
                seen_gpus.add(index)
            if replica.port in seen_ports:
                raise _FieldError(f"{where}.port", f"={replica.port} clashes with another replica's port")
            seen_ports.add(replica.port)
        if len(seen_gpus) != self.gpu.count:
            unused = sorted(set(range(self.gpu.count)) - seen_gpus)
            raise _FieldError("serving.replicas", f"leave GPUs {unused} unused: give every GPU to a replica")
        sizes = {len(r.gpus) for r in replicas}
        if len(sizes) != 1:
            raise _FieldError("serving.replicas", "mix replica sizes: every replica needs the same GPU count")

    @classmethod
    def from_host_data(cls, name: str, data: Mapping[str, Any]) -> HostConfig:
        """Build from a host's merged inventory data; only ``ms4fleet_*`` keys are read."""
        raw: dict[str, Any] = {"name": name}
        for key, value in data.items():
            if not key.startswith(KEY_PREFIX):
                continue
            section = key.removeprefix(KEY_PREFIX)
            if section not in SECTIONS:
                hint = _did_you_mean(section, SECTIONS, prefix=KEY_PREFIX)
                raise ConfigError(name, key, f"is not an ms4fleet setting{hint}")
            raw[section] = value
        if "gpu" not in raw:
            raise ConfigError(
                name,
                "gpu",
                'is missing: declare the host\'s GPUs, e.g. ms4fleet_gpu = {"kind": "h200-sxm", "count": 8}',
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise _to_config_error(name, err) from None


class _FieldError(ValueError):
    """Raised inside validators to point at a field other than the one pydantic is validating."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def resolve_profile(model: str, checkpoint: str | None) -> ModelProfile:
    """``mistral-small-4`` + ``fp8`` -> the ``mistral-small-4-fp8`` profile; a full profile id also works."""
    profiles = model_profiles()
    if checkpoint is None and model in profiles:
        return profiles[model]
    key = f"{model}-{checkpoint or 'fp8'}"
    if key in profiles:
        return profiles[key]
    if model in profiles and profiles[model].checkpoint == checkpoint:
        return profiles[model]
    families = sorted(
        {p.id.rsplit("-", 1)[0] if p.id.endswith(("-fp8", "-nvfp4")) else p.id for p in profiles.values()}
    )
    raise KeyError(
        f"={model!r} (checkpoint {checkpoint or 'default'}) is not a known model profile; known: {', '.join(families)}"
    )


def _did_you_mean(word: str, options: Any, prefix: str = "") -> str:
    names = list(options)
    match = [n for n in names if n.startswith(word)] or difflib.get_close_matches(word, names, n=1)
    return f"; did you mean {prefix}{match[0]}?" if match else ""


def _to_config_error(host: str, err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"]]
    ctx_error = (first.get("ctx") or {}).get("error")
    field = _dotted(loc)
    if isinstance(ctx_error, _FieldError):
        return ConfigError(host, f"{field}.{ctx_error.field}" if field else ctx_error.field, str(ctx_error))
    message = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    kind = first["type"]
    if kind == "extra_forbidden":
        section_fields = _fields_of(loc[:-1])
        return ConfigError(host, field, f"is not a setting{_did_you_mean(loc[-1], section_fields)}")
    if kind == "missing":
        return ConfigError(host, field, "is required")
    value = first.get("input")
    shown = "" if message.startswith("=") or isinstance(value, Mapping) else f"={value!r} "
    return ConfigError(host, field, f"{shown}{message}".strip())


def _dotted(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _fields_of(loc: list[str]) -> list[str]:
    model: Any = HostConfig
    for part in loc:
        if part.isdigit():
            continue
        annotation = model.model_fields[part].annotation
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        model = next((c for c in candidates if issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)
