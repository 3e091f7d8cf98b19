"""Cause naming: each known failure signature, in the wording vLLM / CUDA / Docker / huggingface_hub print
it (shared reference vllm-serving.md sections 3 and 8), maps to one named cause with a fix."""

from __future__ import annotations

import pytest

from ms4fleet.causes import SIGNATURES, name_causes

LINES = {
    "fabric-manager": "RuntimeError: CUDA error: system not yet initialized (Error 802: cudaErrorSystemNotReady)",
    "driver-too-old": "RuntimeError: The NVIDIA driver on your system is too old (found version 12080). "
    "Please update your GPU driver",
    "triton-mla": "ValueError: Cannot make_shape_compatible: incompatible dimensions at index 1: 256 and 512",
    "attention-unsupported": "RuntimeError: Worker failed with error 'Unsupported CPU attention configuration: "
    "head_dim=16 isa=2 kv_cache_idx=0', please check the stack trace above for the root cause",
    "start-gate": "ValueError: Free memory on device cuda:0 (39.2/140.4 GiB) on startup is less than desired GPU memory "
    "utilization (0.92, 129.2 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
    "kv-cache-too-small": "ValueError: To serve at least one request with the models's max seq len (262144), "
    "(5.62 GiB KV cache is needed, which is larger than the available KV cache memory (2.10 GiB). Based on the "
    "available memory, the estimated maximum model length is 97920. Try increasing `gpu_memory_utilization`",
    "no-kv-cache-memory": "ValueError: No available memory for the cache blocks. Try increasing "
    "`gpu_memory_utilization` when initializing the engine.",
    "cuda-oom": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
    "capacity of 139.81 GiB of which 1.02 GiB is free.",
    "shm": "NCCL WARN Error while creating shared memory segment /dev/shm/nccl-vzLsPq (size 9637888)",
    "gated-repo": "huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo for url "
    "https://huggingface.co/mistralai/Mistral-Small-4-119B-2603/resolve/main/params.json.",
    "address-in-use": "ERROR: [Errno 98] error while attempting to bind on address ('0.0.0.0', 8000): "
    "address already in use",
    "engine-timeout": "TimeoutError: Timed out waiting for engine core processes to start. This can happen if "
    "the model is large; increase VLLM_ENGINE_READY_TIMEOUT_S.",
    "engine-init-failed": "RuntimeError: Engine core initialization failed. See root cause above. Failed core "
    "proc(s): {'EngineCore_DP0': 1}",
    "engine-dead": "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace "
    "(above) for the root cause.",
}


def test_every_signature_has_a_sample() -> None:
    assert set(LINES) == {signature.id for signature in SIGNATURES}


@pytest.mark.parametrize(("cause_id", "line"), sorted(LINES.items()))
def test_signature_is_named_with_its_fix(cause_id: str, line: str) -> None:
    log = f"INFO 11-29 14:00:00 [api_server.py:1] starting\n(EngineCore pid=7) ERROR {line}\nINFO shutting down\n"
    causes = name_causes(log)
    assert [cause.id for cause in causes] == [cause_id]
    assert causes[0].fix
    assert causes[0].evidence.startswith("(EngineCore pid=7) ERROR")


def test_kv_cache_too_small_carries_the_estimated_length() -> None:
    (cause,) = name_causes(LINES["kv-cache-too-small"])
    assert cause.details == {"max_model_len": "262144", "estimated_max_model_len": "97920"}
    assert "97,920" in cause.fix


def test_legacy_kv_message_is_recognised() -> None:
    legacy = (
        "ValueError: The model's max seq len (262144) is larger than the maximum number of tokens that can be "
        "stored in KV cache (131072). Try increasing `gpu_memory_utilization` or decreasing `max_model_len`"
    )
    (cause,) = name_causes(legacy)
    assert cause.id == "kv-cache-too-small"
    assert cause.details["estimated_max_model_len"] == "131072"


def test_start_gate_numbers_are_read() -> None:
    (cause,) = name_causes(LINES["start-gate"])
    assert cause.details == {"free_gib": "39.2", "total_gib": "140.4", "utilization": "0.92", "requested_gib": "129.2"}


def test_specific_cause_comes_before_the_engine_death_it_explains() -> None:
    log = "\n".join([LINES["engine-dead"], LINES["triton-mla"]])
    assert [cause.id for cause in name_causes(log)] == ["triton-mla", "engine-dead"]


def test_unrelated_log_names_nothing() -> None:
    assert name_causes("INFO Started server process\nINFO Application startup complete.\n") == []


def test_container_toolkit_cuda_requirement_is_a_driver_problem() -> None:
    line = (
        "docker: Error response from daemon: failed to create task for container: nvidia-container-cli: "
        "requirement error: unsatisfied condition: cuda>=12.9, please update your driver to a newer version"
    )
    (cause,) = name_causes(line)
    assert cause.id == "driver-too-old" and cause.details == {"required_cuda": "12.9"}


def test_start_gate_wordings_of_older_and_newer_vllm() -> None:
    older = "ValueError: Free memory on device (39.2/140.4 GiB) on startup is less than desired GPU memory utilization (0.92, 129.2 GiB)."
    budget = (
        "ValueError: Free memory on device cuda:1 (39.2/140.4 GiB) on startup is less than the engine's budget "
        "after excluding external process's weights (0.92, 100.0 GiB). Decrease GPU memory utilization"
    )
    assert [c.id for c in name_causes(older)] == ["start-gate"]
    (cause,) = name_causes(budget)
    assert cause.id == "start-gate" and cause.details["requested_gib"] == "100.0"


def test_init_failure_after_a_known_cause_lists_both() -> None:
    log = "\n".join([LINES["no-kv-cache-memory"], LINES["engine-init-failed"]])
    assert [cause.id for cause in name_causes(log)] == ["no-kv-cache-memory", "engine-init-failed"]
