"""The serving plan: from a host's GPUs and config, its vLLM replicas, their exact argv and environment,
and the systemd unit text each engine writes byte for byte.

+ ``plan_host(config)``: e.g. 8 x H200 with Mistral Small 4 FP8 -> 4 replicas of TP=2 on ports 8000-8003.
+ ``plan_host(config, free_memory_bytes=...)``: the same, judged against memory actually free now.
+ ``plan_host(config, excluded=...)``: replicas only on GPUs the health check did not exclude
  (``ms4fleet.health.exclusions``); each replica left out is in ``ServingPlan.missing`` with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ms4fleet import paths
from ms4fleet.catalog import GIB, GpuKind, ModelProfile, model_profiles
from ms4fleet.config import HostConfig, internal_port, metrics_port
from ms4fleet.escape import systemd_env, systemd_word
from ms4fleet.health import Exclusion
from ms4fleet.rollout.lb import DRAIN_WINDOW_S
from ms4fleet.secrets import service_secret_refs
from ms4fleet.sizing import KvShape, ModelShape, Sizing, SizingInput, size
from ms4fleet.templating import template
from ms4fleet.weights.startcheck import exec_start_pre

# Load time budget for TimeoutStartSec and VLLM_ENGINE_READY_TIMEOUT_S: reading weights from local NVMe
# at a conservative 200 MB/s, plus torch.compile / CUDA-graph capture and start-up (measured 2-5 min on
# H100 for large MoE models), plus slack. vLLM's own 600 s default is too short for 100+ GB checkpoints.
LOAD_BYTES_PER_S = 200_000_000
START_OVERHEAD_S = 600
# Stopping drains (vLLM >= 0.18, ``--shutdown-timeout``): vLLM takes no new request and finishes those in
# flight for up to this long; its default 0 aborts them. The load balancer's drain window, so a replica
# stopped when the rollout's wait ran out still finishes what it holds, and so does one restarted by a deploy.
SHUTDOWN_TIMEOUT_S = DRAIN_WINDOW_S
# After the drain vLLM tears down its engine processes and frees the GPUs. `docker stop` waits for both
# before it kills, and systemd's TimeoutStopSec is above that, so no stop SIGKILLs a draining replica.
CONTAINER_STOP_S = SHUTDOWN_TIMEOUT_S + 30
TIMEOUT_STOP_S = CONTAINER_STOP_S + 30
# The label a Docker replica's container carries: a hash of its `docker run` line. A unit (re)started while
# its container still runs (Docker restarted under live-restore) adopts it only when the line is the same.
SPEC_LABEL = "ms4fleet.spec"
# vLLM's own address: only the host reaches it; clients go through the host proxy (ms4fleet.proxy).
VLLM_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class Replica:
    index: int
    gpus: tuple[int, ...]
    # Where clients reach its API (the host proxy), Prometheus its /metrics, and vLLM itself listens (loopback).
    port: int
    metrics_port: int
    internal_port: int
    unit_name: str
    container_name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    unit_text: str


@dataclass(frozen=True)
class MissingReplica:
    """A replica slot the plan leaves empty because a GPU of its group may not serve."""

    index: int
    gpus: tuple[int, ...]
    port: int
    reasons: tuple[str, ...]

    @property
    def explanation(self) -> str:
        return f"replica {self.index} (GPUs {','.join(map(str, self.gpus))}, port {self.port}) not placed: " + (
            "; ".join(self.reasons)
        )

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "gpus": list(self.gpus), "port": self.port, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class ServingPlan:
    host: str
    profile: ModelProfile
    gpu: GpuKind
    gpu_count: int
    tp: int
    max_model_len: int
    model_dir: str
    replicas: tuple[Replica, ...]
    sizing: Sizing
    # The name clients ask for, and the container image (None when vLLM runs from a venv): decided here only.
    served_model_name: str
    image: str | None
    warnings: tuple[str, ...] = ()
    alternatives: tuple[str, ...] = field(default=())
    # GPUs the health check excluded, and the replica slots left empty because of them.
    excluded: tuple[Exclusion, ...] = ()
    missing: tuple[MissingReplica, ...] = ()

    @property
    def verdict(self) -> str:
        return self.sizing.verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "model": self.profile.id,
            "gpu": {"kind": self.gpu.id, "count": self.gpu_count},
            "tp": self.tp,
            "replicas": [
                {"index": r.index, "gpus": list(r.gpus), "port": r.port, "unit": r.unit_name, "argv": list(r.argv)}
                for r in self.replicas
            ],
            "max_model_len": self.max_model_len,
            "served_model_name": self.served_model_name,
            "image": self.image,
            "verdict": self.verdict,
            "reasons": list(self.sizing.reasons),
            "warnings": list(self.warnings),
            "alternatives": list(self.alternatives),
            "sizing": self.sizing.to_dict(),
            **(
                {
                    "excluded_gpus": [e.to_json() for e in self.excluded],
                    "missing_replicas": [m.to_json() for m in self.missing],
                }
                if self.excluded
                else {}
            ),
        }


def timeout_start_s(profile: ModelProfile) -> int:
    """Seconds a replica may take from start to healthy, derived from the weights it loads."""
    return START_OVERHEAD_S + math.ceil(profile.weight_bytes / LOAD_BYTES_PER_S / 60) * 60


def sizing_input(config: HostConfig, tp: int, free_memory_bytes: int | None = None) -> SizingInput:
    profile = config.profile
    serving = config.serving
    # vLLM sizes from the CUDA total (NVML's less the driver's reservation), never nvidia-smi's figure.
    return SizingInput(
        gpu_memory_bytes=config.gpu.gpu.cuda_memory_bytes,
        tp=tp,
        gpu_memory_utilization=serving.gpu_memory_utilization,
        weight_bytes=profile.weight_bytes,
        kv=KvShape.from_profile(profile),
        max_model_len=profile.max_model_len(serving.max_model_len),
        kv_cache_dtype=serving.kv_cache_dtype,
        max_num_batched_tokens=serving.max_num_batched_tokens,
        free_memory_bytes=free_memory_bytes,
        model=ModelShape.from_profile(profile),
        max_num_seqs=serving.max_num_seqs,
        gpu_name=config.gpu.gpu.name,
    )


def choose_tp(config: HostConfig) -> int:
    """The tensor-parallel size per replica.

    An explicit setting (or replica layout) wins. Otherwise: the smallest TP dividing the GPU count that
    is at least the vendor's stated minimum for this GPU kind, shards the model (``HostConfig.tp_candidates``)
    and holds the configured context; more
    replicas of fewer GPUs serve more requests, since MLA's KV cache does not shrink with TP.
    """
    serving = config.serving
    if serving.replicas:
        return len(serving.replicas[0].gpus)
    if serving.tensor_parallel_size:
        return serving.tensor_parallel_size
    candidates = config.tp_candidates()
    for wanted in ("fits", "fits-with-reduced-context"):
        for tp in candidates:
            if size(sizing_input(config, tp)).verdict == wanted:
                return tp
    return candidates[-1]


def plan_host(
    config: HostConfig, free_memory_bytes: int | None = None, excluded: tuple[Exclusion, ...] = ()
) -> ServingPlan:
    """The plan for one host. Fleets repeat a handful of host shapes, so each shape is planned once.
    ``excluded``: GPUs no replica may use (the health check's); a host with none plans as before."""
    plan = _plan_shape(config.model_dump_json(exclude={"name"}), free_memory_bytes, tuple(sorted(set(excluded))))
    return dataclasses.replace(plan, host=config.name)


def place(
    layout: list[tuple[tuple[int, ...], int]], excluded: tuple[Exclusion, ...]
) -> tuple[list[tuple[int, tuple[int, ...], int]], tuple[MissingReplica, ...]]:
    """Replica slots (GPU group, port) -> the slots kept (index, GPUs, port) and those left empty.

    A slot is kept whole or left empty: a group is never rebuilt from other GPUs. The slots are the catalog's
    aligned blocks (GPUs 0-1, 2-3, ... at TP2), which on every board the catalog knows keep a group on its
    fastest path: one NVLink-bridge pair on PCIe boards (H100 NVL bridges 0-1, 2-3), one CPU socket's PCIe
    switches on HGX boards, where the NVSwitch gives every pair the same bandwidth anyway. Keeping slot
    indices also keeps each healthy replica's unit, port and GPUs unchanged: excluding a GPU stops only the
    replica that used it.
    """
    bad: dict[int, list[str]] = {}
    for e in excluded:
        bad.setdefault(e.gpu, []).append(e.reason)
    kept, missing = [], []
    for index, (gpus, port) in enumerate(layout):
        reasons = tuple(f"GPU {g} {r}" for g in gpus for r in bad.get(g, ()))
        if reasons:
            missing.append(MissingReplica(index, gpus, port, reasons))
        else:
            kept.append((index, gpus, port))
    return kept, tuple(missing)


@lru_cache(maxsize=1024)
def _plan_shape(config_json: str, free_memory_bytes: int | None, excluded: tuple[Exclusion, ...]) -> ServingPlan:
    # Nothing in a plan depends on the host's name; validate the shape back under a neutral one.
    config = HostConfig.model_validate({**json.loads(config_json), "name": "-"})
    profile = config.profile
    gpu = config.gpu.gpu
    tp = choose_tp(config)
    sizing = size(sizing_input(config, tp, free_memory_bytes))
    max_model_len = profile.max_model_len(config.serving.max_model_len)
    revision = config.weights.revision if config.weights else None
    root = config.weights.dir if config.weights else paths.WEIGHTS_ROOT
    model_dir = paths.model_dir(root, profile, revision)
    layout = _layout(config, tp)
    kept, missing = place(layout, excluded)
    replicas = tuple(_replica(config, index, gpus, port, tp, max_model_len, model_dir) for index, gpus, port in kept)
    alternatives = _alternatives(config) if sizing.verdict == "does-not-fit" else ()
    return ServingPlan(
        host=config.name,
        profile=profile,
        gpu=gpu,
        gpu_count=config.gpu.count,
        tp=tp,
        max_model_len=max_model_len,
        model_dir=model_dir,
        replicas=replicas,
        sizing=sizing,
        served_model_name=served_model_name(config),
        image=runtime_image(config),
        warnings=tuple(_warnings(config, tp)),
        alternatives=alternatives,
        excluded=excluded,
        missing=missing,
    )


def _layout(config: HostConfig, tp: int) -> list[tuple[tuple[int, ...], int]]:
    """Every replica slot (GPU group, public port), whether or not the health check leaves it empty."""
    if config.serving.replicas:
        return [(tuple(r.gpus), r.port) for r in config.serving.replicas]
    return [(tuple(range(i * tp, (i + 1) * tp)), config.serving.port + i) for i in range(config.gpu.count // tp)]


def replica_ports(config: HostConfig) -> list[int]:
    """The public port of every replica slot of the host (the host proxy listens on each, placed or not)."""
    return [port for _, port in _layout(config, choose_tp(config))]


def served_model_name(config: HostConfig) -> str:
    """The model name the API serves: the host's override, else the catalog profile's."""
    return config.serving.served_model_name or config.profile.served_model_name


def runtime_image(config: HostConfig) -> str | None:
    """The vLLM container image, or None when vLLM runs from a venv on the host."""
    return config.runtime.image if config.runtime.kind == "docker" else None


def vllm_argv(config: HostConfig, tp: int, port: int, max_model_len: int, model_path: str) -> list[str]:
    """``vllm serve`` arguments, in a fixed order so the unit text is stable."""
    profile = config.profile
    serving = config.serving
    argv = [
        model_path,
        "--served-model-name",
        served_model_name(config),
        # Loopback only, on the internal port: the host proxy (ms4fleet.proxy) is what clients reach, and it
        # passes only the API; a container shares the host's network (_render_unit), so this is the host's loopback.
        "--host",
        VLLM_ADDRESS,
        "--port",
        str(internal_port(port)),
        "--tensor-parallel-size",
        str(tp),
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        str(serving.max_num_seqs),
        "--max-num-batched-tokens",
        str(serving.max_num_batched_tokens),
        "--gpu-memory-utilization",
        f"{serving.gpu_memory_utilization:.2f}",
    ]
    if serving.kv_cache_dtype != "auto":
        argv += ["--kv-cache-dtype", serving.kv_cache_dtype]
    for flag, value in (
        ("--tokenizer-mode", profile.tokenizer_mode),
        ("--config-format", profile.config_format),
        ("--load-format", profile.load_format),
        ("--tool-call-parser", profile.tool_call_parser),
    ):
        if value:
            argv += [flag, value]
    argv.append("--enable-auto-tool-choice")
    if profile.reasoning_parser:
        argv += ["--reasoning-parser", profile.reasoning_parser]
    backend = serving.attention_backend or profile.attention_backend
    if backend:
        argv += ["--attention-backend", backend]
    if serving.default_reasoning_effort:
        argv += [
            "--default-chat-template-kwargs",
            json.dumps({"reasoning_effort": serving.default_reasoning_effort}, separators=(",", ":")),
        ]
    gpu = config.gpu.gpu
    if tp > 1 and gpu.form_factor == "pcie":
        # vLLM's custom all-reduce hangs over plain PCIe peer-to-peer; NCCL's ring is safe there.
        argv.append("--disable-custom-all-reduce")
    argv += ["--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)]
    argv += serving.extra_args
    return argv


def service_env(config: HostConfig) -> dict[str, str]:
    """Non-secret environment of a replica. Secrets come from the 0600 EnvironmentFile only."""
    env = {
        # Weights are fetched and verified before the service starts: never reach the Hub at run time.
        "HF_HUB_OFFLINE": "1",
        "VLLM_ENGINE_READY_TIMEOUT_S": str(timeout_start_s(config.profile)),
        "VLLM_NO_USAGE_STATS": "1",
    }
    env.update(config.serving.env)
    return dict(sorted(env.items()))


def _replica(
    config: HostConfig, index: int, gpus: tuple[int, ...], port: int, tp: int, max_model_len: int, model_dir: str
) -> Replica:
    docker = config.runtime.kind == "docker"
    argv = vllm_argv(config, tp, port, max_model_len, paths.CONTAINER_MODEL_DIR if docker else model_dir)
    env = service_env(config)
    unit = _render_unit(config, index, gpus, port, argv, env, model_dir)
    return Replica(
        index=index,
        gpus=gpus,
        port=port,
        metrics_port=metrics_port(port),
        internal_port=internal_port(port),
        unit_name=paths.unit_name(index),
        container_name=paths.container_name(index),
        argv=tuple(argv),
        env=env,
        unit_text=unit,
    )


def _render_unit(
    config: HostConfig,
    index: int,
    gpus: tuple[int, ...],
    port: int,
    argv: list[str],
    env: dict[str, str],
    model_dir: str,
) -> str:
    runtime = config.runtime
    keyed = bool(service_secret_refs(config))
    devices = ",".join(str(g) for g in gpus)
    if runtime.kind == "docker":
        command = [
            "/usr/bin/docker",
            "run",
            # No --rm: Docker 20.10 (Debian 12's docker.io) removes an --rm container when dockerd restarts,
            # live-restore or not; a container without it lives on. ExecStart removes the stale one instead.
            "--name",
            paths.container_name(index),
            "--gpus",
            f'"device={devices}"',
            "--ipc=host",
            # Also what dockerd gives it when it stops the container itself.
            "--stop-timeout",
            str(CONTAINER_STOP_S),
            "--ulimit",
            "memlock=-1",
            "--ulimit",
            "stack=67108864",
            # The host's network, not a published port: Docker's port proxy and NAT rules are dockerd's and
            # drop connections while it restarts; with live-restore the replica then keeps serving.
            "--network",
            "host",
            "-v",
            f"{model_dir}:{paths.CONTAINER_MODEL_DIR}:ro",
        ]
        if runtime.shm_size:
            command += ["--shm-size", runtime.shm_size]
        for name in env:
            command += ["-e", name]
        if keyed:
            # Passed by name: the value comes from the EnvironmentFile, never from this command line.
            command += ["-e", "VLLM_API_KEY"]
        command += [runtime.image, *argv]
        spec = hashlib.sha256("\0".join(command).encode()).hexdigest()[:16]
        command[command.index("--name") : command.index("--name")] = ["--label", f"{SPEC_LABEL}={spec}"]
        command = ["/bin/sh", "-c", _ADOPT, paths.container_name(index), spec, *command]
    else:
        command = [f"{runtime.venv}/bin/vllm", "serve", *argv]
    host = local_address(config)
    text: str = template("ms4fleet", "vllm.service.j2", html=False).render(
        index=index,
        profile=config.profile,
        devices=devices,
        port=port,
        docker=runtime.kind == "docker",
        nvswitch=config.gpu.gpu.has_nvswitch(config.gpu.count),
        env=[systemd_env(name, value) for name, value in env.items()],
        env_file=paths.ENV_FILE,
        has_secrets=keyed,
        container=paths.container_name(index),
        exec_start=" ".join(systemd_word(word) for word in command),
        exec_start_post=_exec_start_post(f"http://{url_host(host)}:{internal_port(port)}/health"),
        timeout=timeout_start_s(config.profile),
        stop_timeout=TIMEOUT_STOP_S,
        exec_stop=_exec_stop(paths.container_name(index)),
        user=config.provision.service_user,
        device_allow=gpu_device_allow(config.gpu.count),
        weights_check=(
            exec_start_pre(model_dir, config.profile.repo_id, config.weights.revision)
            if config.weights is not None and config.weights.revision
            else ""
        ),
    )
    return text


# ExecStart of a Docker replica: `sh -c _ADOPT CONTAINER SPEC docker run ...`. A container of this name and
# spec still running (the unit restarted because its `docker run` client died with dockerd, while the
# container lived on under live-restore) is re-attached; anything else of that name is removed and the
# container run anew; dockerd not answering yet fails the start (Restart= retries) rather than guess. The words
# of the `docker run` line stay separate arguments: no shell parses them.
_ADOPT = (
    "c=$0 spec=$1; shift; running=$(/usr/bin/docker ps --quiet --filter status=running"
    " --filter label=ms4fleet.spec=$spec) || exit 1;"
    ' [ -z "$running" ] || exec /usr/bin/docker attach --no-stdin "$c";'
    ' /usr/bin/docker rm --force "$c" >/dev/null 2>&1; exec "$@"'
)


def _exec_start_post(health_url: str) -> str:
    """ExecStartPost= of a replica: ask /health every 2 s until it answers 200, and fail the start as soon as
    the main process is gone. systemd leaves a unit whose main process exits in "start-post" until this
    command ends, so a retry loop blind to it (curl --retry) held a replica whose vLLM died while loading in
    "activating" for all of TimeoutStartSec (20 min) before Restart= could act. TimeoutStartSec bounds the
    wait for a slow load. Each try is a fresh curl: a connection reset while the engine starts is one more
    try, whatever curl's version retries. The liveness check follows the pause, never the fork: for its
    first moments a native replica's main process is still root, before systemd switches it to User=, and
    ``kill -0`` from the service user fails then (EPERM) as if it were gone (seen on the sim)."""
    script = (
        'until /usr/bin/curl --silent --fail --output /dev/null --max-time 10 "$0"; do sleep 2;'
        ' kill -0 "$MAINPID" 2>/dev/null || { echo "main process $MAINPID exited before $0 answered" >&2; exit 1; };'
        " done"
    )
    return " ".join(systemd_word(w) for w in ("/bin/sh", "-c", script, health_url))


def _exec_stop(container: str) -> str:
    """ExecStop= of a Docker replica: drain and stop the container, but only while the unit's client runs.
    systemd also runs ExecStop after the client exited on its own (dockerd restarted: $MAINPID unset);
    the container then lives on to be adopted, instead of being stopped by the restart."""
    script = '[ -z "$MAINPID" ] || exec /usr/bin/docker stop --time "$1" "$0"'
    return " ".join(systemd_word(w) for w in ("/bin/sh", "-c", script, container, str(CONTAINER_STOP_S)))


def gpu_device_allow(gpu_count: int) -> list[str]:
    """``DeviceAllow=`` entries of a native replica: every GPU of the host, not only its own, because a device
    node's minor need not be the CUDA index (CUDA_VISIBLE_DEVICES picks the replica's GPUs); the control and
    modeset nodes; nvidia-uvm and nvidia-caps by major number, since their nodes may appear after the unit
    starts (nvidia-modprobe makes them on first use, MIG one per instance)."""
    nodes = [f"/dev/nvidia{i}" for i in range(gpu_count)] + ["/dev/nvidiactl", "/dev/nvidia-modeset"]
    return [f"{node} rw" for node in nodes] + ["char-nvidia-uvm rw", "char-nvidia-caps r"]


def local_address(config: HostConfig) -> str:
    """Where vLLM answers on its own host (on ``Replica.internal_port``): loopback, whatever the proxy binds."""
    return VLLM_ADDRESS


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _warnings(config: HostConfig, tp: int) -> list[str]:
    profile = config.profile
    gpu = config.gpu.gpu
    out = []
    if profile.checkpoint == "nvfp4" and not gpu.fp4_native:
        out.append(
            f"NVFP4 on {gpu.architecture.title()}: vLLM falls back to weight-only FP4 Marlin kernels, "
            "saving memory with no compute speed-up; FP8 is native here"
        )
    floor = profile.min_gpus.get(gpu.id)
    if floor and tp < floor:
        out.append(f"TP={tp} is below the vendor's minimum of {floor} x {gpu.id} for {profile.display_name}")
    return out


def _alternatives(config: HostConfig) -> tuple[str, ...]:
    """For a host that cannot serve: what would, stated as GPUs of this kind per replica."""
    out = []
    gpu = config.gpu.gpu
    for profile in model_profiles().values():
        if profile.family != config.profile.family:
            continue
        probe = config.model_copy(
            update={
                "serving": config.serving.model_copy(update={"model": profile.id, "checkpoint": None}),
            }
        )
        needed = next(
            (tp for tp in (1, 2, 4, 8) if size(sizing_input(probe, tp)).verdict != "does-not-fit"),
            None,
        )
        vendor = profile.min_gpus.get(gpu.id)
        weights = f"{profile.weight_bytes / GIB:.0f} GiB of weights"
        if needed is None:
            out.append(f"{profile.display_name} ({weights}) does not fit on up to 8 x {gpu.id}")
            continue
        vendor_note = f" (vendor minimum {vendor})" if vendor and vendor > needed else ""
        speed = "" if gpu.architecture in profile.native_compute else ", weight-only on this GPU"
        out.append(f"{profile.display_name} ({weights}{speed}) needs {needed} x {gpu.id} per replica{vendor_note}")
    return tuple(out)
