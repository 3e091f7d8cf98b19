"""``vllm`` for the simulated fleet: ``vllm serve MODEL [flags]`` with real vLLM's flags and behaviour.

Start-up follows vLLM's order: parse flags (argparse errors, exit 2), resolve the model, check the
GPUs' free memory (engine-core error, exit 1), load the weights (time = overhead + bytes / bandwidth),
size the KV cache (engine-core error when max_model_len does not fit), then listen on the port, which
was bound early but refuses connections until the engine is ready, as vLLM's socket does.

Timing knobs (environment): ``MS4FLEET_SIM_START_OVERHEAD_S`` (default 2), ``MS4FLEET_SIM_LOAD_BYTES_PER_S``
(default 4e9, a fast NVMe read), ``MS4FLEET_SIM_DEAD_EXIT_S`` (seconds between engine death and exit,
default 2). GPU and fault file locations: see ``gpus.py``.

Exit status: 2 for a bad command line, 1 when start-up fails, 0 after SIGTERM/SIGINT and also after the
engine died, as vLLM 0.32 does (vllm-project/vllm#48966).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType

from . import faults as faults_mod
from . import gpus as gpus_mod
from . import memory, model, vlog
from .cli import ServeArgs, StartupError, load_flags, parse_serve
from .engine import Engine
from .server import ROUTES, StandinServer


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected a number of seconds (or bytes per second)") from None


def _fail(error: StartupError) -> int:
    """Report a start-up error the way vLLM's processes do; exit status 1."""
    if error.engine_core:
        vlog.error("core.py:1012", "EngineCore failed to start.", "EngineCore_DP0")
        vlog.error("core.py:1012", f"{error.exc_type}: {error.message}", "EngineCore_DP0")
        final = (
            "RuntimeError: Engine core initialization failed. See root cause above. "
            "Failed core proc(s): {'EngineCore_DP0': 1}"
        )
    else:
        final = f"{error.exc_type}: {error.message}"
    sys.stderr.write(
        "Traceback (most recent call last):\n"
        '  File "/usr/local/bin/vllm", line 10, in <module>\n    sys.exit(main())\n'
        f"{final}\n"
    )
    sys.stderr.flush()
    return 1


def _log_plan(args: ServeArgs, info: model.ModelInfo, plan: memory.Plan, load_s: float) -> None:
    ranks = args.tensor_parallel_size
    processes = ["EngineCore_DP0"] if ranks == 1 else [f"Worker_TP{r}" for r in range(ranks)]
    weights_gib = memory.format_gib(info.weight_bytes // ranks)
    for process in processes:
        vlog.info("default_loader.py:314", f"Loading weights took {load_s:.2f} seconds", process)
        vlog.info(
            "gpu_model_runner.py:4012", f"Model loading took {weights_gib} GiB memory and {load_s:.6f} seconds", process
        )
        vlog.info(
            "gpu_worker.py:760", f"Available KV cache memory: {memory.format_gib(plan.kv_budget_bytes)} GiB", process
        )
    vlog.info(
        "kv_cache_utils.py:2328",
        f"GPU KV cache size: {plan.kv_tokens:,} tokens, Maximum concurrency for "
        f"{plan.max_model_len:,} tokens per request: {plan.max_concurrency:.2f}x",
        "EngineCore_DP0",
    )


def serve(argv: Sequence[str], env: Mapping[str, str]) -> int:
    flags = load_flags()
    try:
        args = parse_serve(argv, flags)
    except StartupError as error:
        return _fail(error)
    version: str = flags["vllm_version"]
    vlog.info("utils.py:299", f"vLLM API server version {version}")
    vlog.info("utils.py:233", f"non-default args: {args.non_default}")
    api_keys = args.api_keys or ([env["VLLM_API_KEY"]] if env.get("VLLM_API_KEY") else [])
    server = StandinServer((args.host or "", args.port), None, api_keys)
    source: gpus_mod.GpuSource | None = None
    try:
        try:
            # vLLM binds its socket before starting the engine: a busy port fails fast.
            server.server_bind()
        except OSError as exc:
            raise StartupError(
                "OSError",
                f"[Errno {exc.errno}] error while attempting to bind on address "
                f"({args.host or '0.0.0.0'!r}, {args.port}): {(exc.strerror or str(exc)).lower()}",
            ) from exc
        info = model.load(args.model, args.revision, args.load_format, env)
        vlog.info("model.py:561", f"Resolved architecture: {info.architecture}")
        model.check_max_model_len(args.max_model_len, info, env)
        source = gpus_mod.discover(env)
        faults = faults_mod.read(source.faults_file)
        vlog.info(
            "core.py:101",
            f"Initializing a V1 LLM engine (v{version}) with config: model={args.model!r}, "
            f"tensor_parallel_size={args.tensor_parallel_size}, kv_cache_dtype={args.kv_cache_dtype}, "
            f"served_model_name={args.served_model_names[0]}",
            "EngineCore_DP0",
        )
        overhead = _seconds(env, "MS4FLEET_SIM_START_OVERHEAD_S", 2.0)
        bandwidth = _seconds(env, "MS4FLEET_SIM_LOAD_BYTES_PER_S", 4e9)
        if faults.refuse_start:
            raise StartupError("RuntimeError", faults.refuse_start, engine_core=True)
        requested = memory.check_free_memory(source.gpus, args)
        source.register(os.getpid(), requested, args.tensor_parallel_size)
        if args.attention_backend:
            vlog.info("cuda.py:367", f"Using {args.attention_backend} attention backend.", "EngineCore_DP0")
        vlog.info("gpu_model_runner.py:3924", f"Starting to load model {args.model}...", "EngineCore_DP0")
        load_s = overhead + info.weight_bytes / args.tensor_parallel_size / bandwidth + faults.slow_start_s
        time.sleep(load_s)
        plan = memory.plan(requested, info, args)
        _log_plan(args, info, plan, load_s)
    except StartupError as error:
        if source is not None:
            source.unregister()
        server.server_close()
        return _fail(error)
    exit_delay = _seconds(env, "MS4FLEET_SIM_DEAD_EXIT_S", 2.0)

    def on_dead() -> None:
        # vLLM's API server shuts itself down once the engine core is dead (terminate_if_errored).
        _stop_later(server, exit_delay)

    server.engine = Engine(args, info, plan, source.faults_file, on_dead, version)
    return _run(server, source, args.shutdown_timeout)


def _stop_later(server: StandinServer, delay: float) -> None:
    threading.Timer(delay, server.shutdown).start()


def _run(server: StandinServer, source: gpus_mod.GpuSource, shutdown_timeout: int) -> int:
    """Listen, serve until SIGTERM/SIGINT or engine death, then clean up like vLLM's shutdown: with
    ``--shutdown-timeout N`` > 0, refuse new requests and let those in flight finish for up to N seconds."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        if server.draining:
            return
        vlog.info("launcher.py:110", f"Received signal {signal.Signals(signum).name}, shutting down.")
        if shutdown_timeout > 0:
            server.start_drain()
        _stop_later(server, 0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.server_activate()
        host, port = str(server.server_address[0]), int(server.server_address[1])
        vlog.info("api_server.py:1850", f"Starting vLLM API server 0 on http://{host}:{port}")
        vlog.info("launcher.py:46", "Available routes are:")
        for route in ROUTES:
            vlog.info("launcher.py:54", f"Route: {route}")
        vlog.uvicorn(f"Started server process [{os.getpid()}]")
        vlog.uvicorn("Waiting for application startup.")
        vlog.uvicorn("Application startup complete.")
        server.serve_forever(poll_interval=0.2)
        # No new connection from here; requests already accepted keep their threads.
        server.server_close()
        if server.draining:
            mode = f"mode=drain timeout={shutdown_timeout}s"
            vlog.info("launcher.py:267", f"[shutdown] API server: stopping engine client {mode}")
            left = server.wait_idle(shutdown_timeout)
            if left:
                vlog.info("core.py:1641", f"[shutdown] EngineCore: aborting in-flight requests count={left}")
    finally:
        server.server_close()
        source.unregister()
        vlog.uvicorn("Shutting down")
        vlog.uvicorn("Waiting for application shutdown.")
        vlog.uvicorn("Application shutdown complete.")
        vlog.uvicorn(f"Finished server process [{os.getpid()}]")
    # Also 0 after the engine died: vLLM's API server then shuts down gracefully and exits 0, so
    # systemd's Restart=on-failure does not restart it (vllm-project/vllm#48966, open). Reproduced.
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vllm`` executable in the stand-in image."""
    return serve(list(sys.argv[1:] if argv is None else argv), os.environ)


if __name__ == "__main__":
    sys.exit(main())
