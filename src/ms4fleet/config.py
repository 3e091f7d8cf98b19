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

from packaging.version import Version as _Release
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
from ms4fleet.values import (
    AptComponent,
    AptSuite,
    AptUrl,
    Backend,
    CudaToolkit,
    DataDir,
    DriverVersion,
    EnvName,
    HostPath,
    HttpUrl,
    ImageRef,
    KeyFingerprint,
    Network,
    PackageSeries,
    PeerAddress,
    Port,
    ServedName,
    Sha256,
    Size,
    Text,
    Token,
    UserName,
    Version,
    image_version,
)
from ms4fleet.vllm_args import check_extra_args

SECTIONS = ("gpu", "serving", "runtime", "weights", "provision", "monitoring", "ssh_accept_new")
KEY_PREFIX = "ms4fleet_"
# The share of each GPU vLLM may take unless the host sets one (headroom and `ms4fleet size` default to it too).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
# Each replica has three ports, all derived here from its public one: the host proxy's API listener (the public
# port itself), its /metrics listener (+ METRICS_PORT_OFFSET) and vLLM's own, on loopback only
# (+ INTERNAL_PORT_OFFSET). vLLM checks --api-key only under /v1 (and a few other prefixes): the proxy passes
# nothing else, so its other routes (/invocations, /tokenize, /pooling, /docs, ...) never leave the host.
METRICS_PORT_OFFSET = 10000
INTERNAL_PORT_OFFSET = 20000
# Who may always read a replica's /metrics listener: the host itself (gates, drain and status read over SSH).
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


def metrics_port(port: int) -> int:
    """The host proxy's /metrics listener of the replica whose API answers on ``port``."""
    return port + METRICS_PORT_OFFSET


def internal_port(port: int) -> int:
    """Where vLLM itself listens (127.0.0.1 only) for the replica whose API answers on ``port``."""
    return port + INTERNAL_PORT_OFFSET


_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL)", re.IGNORECASE)
# Variables the unit sets itself (GPU selection, home, offline weights): an override would fork the decision.
_MANAGED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "HOME", "HF_HUB_OFFLINE"})
_COMMIT = re.compile(r"\A[0-9a-f]{40}\Z")
# Fields whose input is never shown in an error: a secret may sit in them.
_SECRET_FIELDS = frozenset({"api_key", "hf_token", "extra_args"})
# Line breaks of any kind, so a ConfigError stays one line whatever it quotes.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


class ConfigError(ValueError):
    """Invalid configuration. ``str(err)`` is one line: ``host: field=value problem; what to do``."""

    def __init__(self, host: str, field: str, message: str) -> None:
        self.host = host
        self.field = field
        sep = "" if message.startswith("=") else " "
        line = f"{host}: {field}{sep}{message}" if field else f"{host}: {message}"
        super().__init__(_BREAKS.sub(" ", line))


class _Section(BaseModel):
    # Strict: a string is not a number, a YAML boolean is not a string, a float is not an int.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SecretRef(_Section):
    """A secret BY REFERENCE: a file on the host, or an environment variable of the deploying process."""

    file: HostPath | None = None
    env: EnvName | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.file is None) == (self.env is None):
            raise ValueError("must name exactly one of file (a path on the host) or env (a variable name)")
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

    gpus: list[Annotated[int, Field(ge=0, le=15)]]
    port: Port


class ServingConfig(_Section):
    model: str = "mistral-small-4"
    checkpoint: Literal["fp8", "nvfp4", "mxfp4", "bf16"] | None = None
    tensor_parallel_size: Annotated[int, Field(ge=1, le=16)] | None = None
    max_model_len: Annotated[int, Field(ge=256)] | None = None
    max_num_seqs: Annotated[int, Field(ge=1, le=4096)] = 64
    max_num_batched_tokens: Annotated[int, Field(ge=256, le=1_048_576)] = 8192
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    port: Port = 8000
    bind_address: str = "127.0.0.1"
    # Networks (CIDR) allowed to read /metrics on each replica's metrics listener, besides loopback:
    # the Prometheus host's, the load balancer's.
    metrics_allow: list[Network] = Field(default_factory=list)
    served_model_name: ServedName | None = None
    attention_backend: Backend | None = None
    default_reasoning_effort: Token | None = None
    replicas: list[ReplicaSpec] | None = None
    api_key: SecretRef | None = None
    # Without api_key, ms4fleet generates a key (ms4fleet.apikey) unless this says the endpoint answers anyone.
    open_endpoint: bool = False
    env: dict[EnvName, Text] = Field(default_factory=dict)
    extra_args: list[Text] = Field(default_factory=list)

    _api_key_ref = field_validator("api_key", mode="before")(_secret_ref)

    @model_validator(mode="after")
    def _open_or_keyed(self) -> ServingConfig:
        if self.open_endpoint and self.api_key is not None:
            raise ValueError(
                "sets open_endpoint: true and an api_key: an open endpoint takes no key; drop one of the two"
            )
        return self

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _utilization(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"={value} must be in (0, 1]: the share of each GPU's memory vLLM may take")
        return value

    @field_validator("bind_address")
    @classmethod
    def _address(cls, value: str) -> str:
        if "%" in value:
            raise ValueError("names a scope (%...): bind to an address without one")
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)") from None
        if str(address) != value:
            # Scope ids (fe80::1%eth0) and other spellings: the unit, docker -p and URLs take the canonical form.
            raise ValueError(f"is not written canonically: write {str(address).split('%')[0]!r}")
        return value

    @field_validator("env")
    @classmethod
    def _no_secret_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if name in _MANAGED_ENV:
                raise ValueError(f"key {name!r} is set by ms4fleet itself (GPU selection, home, offline weights)")
            if _SECRET_NAME.search(name):
                raise ValueError(
                    f"key {name!r} looks like a secret given by value: reference it with "
                    "serving.api_key or weights.hf_token instead"
                )
        return env

    @field_validator("extra_args")
    @classmethod
    def _unmanaged(cls, args: list[str]) -> list[str]:
        check_extra_args(args)
        return args


class RuntimeConfig(_Section):
    kind: Literal["docker", "native"] = "docker"
    image: ImageRef = "vllm/vllm-openai:v0.32.0"
    # The native install's version, and the label of an image pinned by digest alone or by a custom tag.
    vllm_version: Version = "0.32.0"
    venv: HostPath = "/opt/ms4fleet/vllm"
    shm_size: Size | None = None
    # Where `ms4fleet rollout` resolves the image's tag to a digest (a mirror of the image's registry); None:
    # the registry the reference names, over https. http:// only with registry_allow_insecure.
    registry_url: HttpUrl | None = None
    registry_allow_insecure: bool = False

    @field_validator("venv")
    @classmethod
    def _not_root(cls, venv: str) -> str:
        if venv == "/":
            raise ValueError("is / : name the venv's own directory, e.g. /opt/ms4fleet/vllm")
        return venv

    @model_validator(mode="after")
    def _registry_transport(self) -> RuntimeConfig:
        if (
            self.registry_url is not None
            and self.registry_url.startswith("http://")
            and not self.registry_allow_insecure
        ):
            raise _FieldError(
                "registry_url",
                f"={self.registry_url!r} is plain http: use an https:// registry, or set "
                "runtime.registry_allow_insecure: true to accept digests anyone on the path can alter",
            )
        return self

    def running_vllm(self) -> tuple[str, str]:
        """The vLLM release this runtime runs and the field that says so."""
        if self.kind == "docker":
            tagged = image_version(self.image)
            if tagged is not None:
                return tagged, "runtime.image"
        return self.vllm_version, "runtime.vllm_version"


class WeightsConfig(_Section):
    source: Literal["hub", "mirror", "path"] = "hub"
    # A commit for the hub; for a mirror or a path, a name of the pin (it becomes a directory name).
    revision: Token | None = None
    dir: DataDir = paths.WEIGHTS_ROOT
    mirror_url: HttpUrl | None = None
    # The sha256 of the mirror's manifest for this revision: the anchor that makes a mirror's files trusted.
    manifest_sha256: Sha256 | None = None
    # http:// mirrors (and redirects to http://), and a mirror without manifest_sha256, are refused unless this
    # says so (HostConfig checks the pin, where the model's repo names the manifest's URL).
    allow_insecure: bool = False
    path: DataDir | None = None
    hf_token: SecretRef | None = None
    # Peer staging (ms4fleet.weights.tree): how many hosts one host feeds at once, how many the source feeds, and
    # where a feeding host serves its verified files to the other hosts (with a per-run token): the address on
    # the staging network (default: the address the controller reaches it at) and the port.
    # Stage through the peer tree in rollouts (pyinfra) too, not only with `ms4fleet weights stage --peers`.
    peers: bool = False
    peer_address: PeerAddress | None = None
    peer_fanout: Annotated[int, Field(ge=1, le=16)] = 2
    peer_seeds: Annotated[int, Field(ge=1, le=16)] = 1
    peer_port: Port = 8790

    _hf_token_ref = field_validator("hf_token", mode="before")(_secret_ref)

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
        if self.source == "mirror" and self.mirror_url is None:
            raise _FieldError("mirror_url", "is required when source is mirror: an https:// URL")
        if self.mirror_url is not None and self.mirror_url.startswith("http://") and not self.allow_insecure:
            raise _FieldError(
                "mirror_url",
                f"={self.mirror_url!r} is plain http: use an https:// mirror, or set weights.allow_insecure: true "
                "to accept one that anyone on the path can alter",
            )
        if self.source == "path" and self.path is None:
            raise _FieldError("path", "is required when source is path: an absolute directory on the host")
        return self


class AptRepo(_Section):
    """An apt repository in deb822 form, trusted only through its own keyring, whose key is pinned by
    fingerprint: the key downloaded from ``key_url`` is installed only if it has it, and apt accepts only
    signatures by it (``Signed-By``)."""

    # One deb822 field each: single-line and without spaces (URIs, Suites, Components split on them).
    url: AptUrl
    suite: AptSuite
    components: list[AptComponent] = Field(default_factory=list)
    key_url: AptUrl
    key_fingerprint: KeyFingerprint


class ProvisionConfig(_Section):
    manage_driver: bool = True
    # Let ms4fleet replace a driver it did not install (a runfile's, or a proprietary module where the GPU
    # needs the open one) with its own packages; without it such a host is refused (``ms4fleet.adopt``).
    driver_takeover: bool = False
    # With Secure Boot on, the firmware loads only signed modules: the DKMS signing key (MOK) is enrolled on
    # this host, so a driver ms4fleet installs can load. Without it such a host is refused (``ms4fleet.adopt``).
    secure_boot_mok: bool = False
    driver_branch: Annotated[int, Field(ge=470, le=999)] = 580
    driver_version: DriverVersion = "580.95.05"
    cuda_toolkit: CudaToolkit = "13-0"
    persistence_mode: bool = True
    reboot: Literal["auto", "never"] = "auto"
    nvidia_apt_repo: AptRepo | None = None
    docker_daemon_options: dict[Text, Any] = Field(default_factory=dict)
    service_user: UserName = "ms4fleet"
    # The series apt pins Docker, containerd and the container toolkit to; unset: the catalog's for the OS.
    docker_version: PackageSeries | None = None
    containerd_version: PackageSeries | None = None
    container_toolkit_version: PackageSeries | None = None

    @model_validator(mode="after")
    def _live_restore_kept(self) -> ProvisionConfig:
        if self.docker_daemon_options.get("live-restore", True) is not True:
            raise _FieldError(
                "docker_daemon_options",
                " turns live-restore off: ms4fleet keeps it on, since without it a Docker restart stops every replica",
            )
        return self

    @model_validator(mode="after")
    def _version_in_branch(self) -> ProvisionConfig:
        if not self.driver_version.startswith(f"{self.driver_branch}."):
            raise _FieldError(
                "driver_version",
                f"={self.driver_version!r} is not on driver_branch {self.driver_branch}: "
                "pin a version of that branch (fabric manager is pinned to it too)",
            )
        return self


class MonitoringConfig(_Section):
    """Which Prometheus scrapes this host (ms4fleet.monitoring plans it) and which exporters it runs."""

    # The inventory name of the monitoring host (Debian's prometheus is installed there).
    prometheus_host: Token
    scrape_interval_s: Annotated[int, Field(ge=5, le=300)] = 15
    node_exporter: bool = False
    dcgm_exporter: bool = False


class HostConfig(_Section):
    """Everything ms4fleet needs to decide about one host."""

    name: Text
    gpu: GpuSpec
    serving: ServingConfig = Field(default_factory=ServingConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    # Optional for planning and sizing; the engines require it before fetching or serving.
    weights: WeightsConfig | None = None
    provision: ProvisionConfig = Field(default_factory=ProvisionConfig)
    monitoring: MonitoringConfig | None = None
    # Trust the host's SSH key on first use instead of requiring it in known_hosts (ms4fleet.hostkeys).
    ssh_accept_new: bool = False

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
        self._check_minimums(profile)
        self._check_mirror_pinned(profile)
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
        if tp is not None:
            self._check_shardable("serving.tensor_parallel_size", tp)
        if serving.replicas is not None:
            self._check_replicas(serving.replicas)
            self._check_shardable("serving.replicas", len(serving.replicas[0].gpus))
        else:
            self._check_ports()
        return self

    def tp_candidates(self) -> list[int]:
        """Tensor-parallel sizes the planner may pick: each divides the GPU count, shards the model and is
        at least the vendor's minimum for this GPU kind (or the whole host when that is smaller)."""
        count = self.gpu.count
        floor = min(self.profile.min_gpus.get(self.gpu.kind, 1), count)
        return [tp for tp in range(floor, count + 1) if count % tp == 0 and shard_problem(self.profile, tp) is None]

    def _check_minimums(self, profile: ModelProfile) -> None:
        gpu = self.gpu.gpu
        branch = self.provision.driver_branch
        if self.provision.manage_driver and branch < gpu.min_driver_branch:
            raise _FieldError(
                "provision.driver_branch",
                f"={branch} is below the {gpu.id} minimum {gpu.min_driver_branch}: "
                f"set driver_branch (and driver_version) to {gpu.min_driver_branch} or later",
            )
        version, field = self.runtime.running_vllm()
        if _Release(version) < _Release(DRAIN_MIN_VLLM):
            raise _FieldError(
                field,
                f"runs vLLM {version}, below {DRAIN_MIN_VLLM}, the first with --shutdown-timeout, which ms4fleet's "
                f"units pass so a stop lets requests finish: use vLLM {DRAIN_MIN_VLLM} or later",
            )
        if _Release(version) < _Release(profile.min_vllm):
            raise _FieldError(
                field,
                f"runs vLLM {version}, below {profile.display_name}'s minimum {profile.min_vllm}: "
                f"use vLLM {profile.min_vllm} or later",
            )

    def _check_mirror_pinned(self, profile: ModelProfile) -> None:
        weights = self.weights
        if weights is None or weights.source != "mirror" or weights.manifest_sha256 or weights.allow_insecure:
            return
        from ms4fleet.weights.manifest import mirror_manifest_url, unpinned_manifest

        assert weights.mirror_url is not None and weights.revision is not None  # WeightsConfig checked both
        url = mirror_manifest_url(weights.mirror_url, profile.repo_id, weights.revision)
        raise _FieldError("weights.manifest_sha256", unpinned_manifest(url, "weights.manifest_sha256"))

    def _check_shardable(self, field: str, tp: int) -> None:
        problem = shard_problem(self.profile, tp)
        if problem is not None:
            raise _FieldError(field, f"gives TP={tp}, but {problem}: use a TP that divides it")

    def _check_ports(self) -> None:
        candidates = [self.serving.tensor_parallel_size] if self.serving.tensor_parallel_size else self.tp_candidates()
        if not candidates:
            raise _FieldError(
                "gpu.count",
                f"={self.gpu.count}: no tensor-parallel size divides it and shards {self.profile.display_name} "
                f"(at least {self.profile.min_gpus.get(self.gpu.kind, 1)} GPUs); use a count such as 1, 2, 4 or 8",
            )
        replicas = self.gpu.count // min(candidates)
        last = internal_port(self.serving.port + replicas - 1)
        if last > 65535:
            raise _FieldError(
                "serving.port",
                f"={self.serving.port} with up to {replicas} replicas needs ports up to {last} (vLLM's own: "
                f"port + {INTERNAL_PORT_OFFSET}), past 65535: "
                f"use a port of at most {65536 - replicas - INTERNAL_PORT_OFFSET}",
            )

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
        for i, replica in enumerate(replicas):
            derived = {"metrics": metrics_port(replica.port), "vLLM's own": internal_port(replica.port)}
            for what, port in derived.items():
                if port > 65535:
                    raise _FieldError(
                        f"serving.replicas[{i}].port",
                        f"={replica.port} puts its {what} port at {port}, past 65535: use a port of at most "
                        f"{65535 - INTERNAL_PORT_OFFSET}",
                    )
                if port in seen_ports or any(
                    port in (metrics_port(r.port), internal_port(r.port)) for r in replicas if r is not replica
                ):
                    raise _FieldError(
                        f"serving.replicas[{i}].port",
                        f"={replica.port} puts its {what} port at {port}, a port another replica already uses "
                        f"(metrics = port + {METRICS_PORT_OFFSET}, vLLM = port + {INTERNAL_PORT_OFFSET}): pick ports "
                        "closer together",
                    )
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


def shard_problem(profile: ModelProfile, tp: int) -> str | None:
    """Why vLLM cannot split ``profile`` over ``tp`` GPUs (attention heads, KV heads, MoE width), or None."""
    if profile.num_attention_heads % tp:
        return f"{profile.display_name}'s {profile.num_attention_heads} attention heads do not divide by {tp}"
    kv_heads = profile.num_kv_heads if profile.kv == "gqa" else 1
    if kv_heads and (tp % kv_heads if tp >= kv_heads else kv_heads % tp):
        return f"its {kv_heads} KV heads neither divide by nor divide {tp}"
    for width, what in ((profile.moe_intermediate_size, "expert"), (profile.intermediate_size, "MLP")):
        if width and width % tp:
            return f"its {what} width {width} does not divide by {tp}"
    return None


# The replica units pass --shutdown-timeout (ms4fleet.serving), which vLLM has from this release on.
DRAIN_MIN_VLLM = "0.18.0"


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
    errors = err.errors()
    # A typo first: "gpu.type is not a setting" explains the "gpu.kind is required" that follows from it.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(part) for part in first["loc"]]
    ctx_error = (first.get("ctx") or {}).get("error")
    field = _dotted(loc)
    if isinstance(ctx_error, _FieldError):
        return ConfigError(host, f"{field}.{ctx_error.field}" if field else ctx_error.field, str(ctx_error))
    message = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    kind = first["type"]
    if kind == "extra_forbidden":
        section_fields = _fields_of(loc[:-1])
        hint = _did_you_mean(loc[-1], section_fields)
        missing = [e["loc"][-1] for e in errors if e["type"] == "missing" and e["loc"][:-1] == first["loc"][:-1]]
        if not hint and missing:
            hint = f"; did you mean {missing[0]} (required, and not set)?"
        return ConfigError(host, field, f"is not a setting{hint}")
    if kind == "missing":
        return ConfigError(host, field, "is required")
    value = first.get("input")
    secret = bool(_SECRET_FIELDS & set(loc))
    if secret and isinstance(value, str) and kind != "value_error":
        message = "is given by value: secrets are referenced, never inlined"
    return ConfigError(host, field, f"{_shown(value, secret, message)}{message}{_type_hint(kind, value)}".strip())


def _shown(value: Any, secret: bool, message: str) -> str:
    """``=<value> `` before the message: scalars only, shortened, and never for a field that may hold a secret."""
    if secret or message.startswith("=") or not isinstance(value, (str, int, float, type(None))):
        return ""
    text = repr(value)
    return f"={text[:77]}...{text[-1]} " if len(text) > 80 else f"={text} "


def _type_hint(kind: str, value: Any) -> str:
    if isinstance(value, bool) and kind in {"string_type", "int_type", "float_type", "literal_error"}:
        return " (YAML reads yes/no/on/off/true/false as booleans: quote the value)"
    if isinstance(value, str) and kind in {"int_type", "float_type"}:
        return " (a string is not a number: write it without quotes)"
    if isinstance(value, float) and kind == "int_type":
        return " (write a whole number)"
    return ""


def _dotted(loc: list[str]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue  # pydantic's marker for a mapping key: the key itself is the previous part
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
