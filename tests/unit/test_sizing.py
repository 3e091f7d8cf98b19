"""Every sizing formula against values computed by hand (the arithmetic is in each comment)."""

import json
import subprocess
import sys

import pytest

from ms4fleet.catalog import GIB, MIB, gpu_kinds, model_profiles
from ms4fleet.sizing import (
    KvShape,
    SizingInput,
    activation_bytes,
    kv_bytes_per_token,
    reserve_bytes,
    size,
)

MS4 = model_profiles()["mistral-small-4-fp8"]
MS4_KV = KvShape.from_profile(MS4)
GPT_OSS_KV = KvShape.from_profile(model_profiles()["gpt-oss-120b"])


def test_mistral_small_4_bf16_kv_is_23040_bytes_per_token() -> None:
    # (kv_lora_rank 256 + qk_rope_head_dim 64) x 36 layers x 2 bytes
    assert kv_bytes_per_token(MS4_KV) == 23_040


def test_mla_kv_is_replicated_not_split_by_tp() -> None:
    assert {kv_bytes_per_token(MS4_KV, "auto", tp) for tp in (1, 2, 4, 8)} == {23_040}


def test_fp8_kv_halves_the_cache() -> None:
    assert kv_bytes_per_token(MS4_KV, "fp8") == 11_520


def test_one_full_context_sequence_is_5_625_gib_per_gpu() -> None:
    # 23,040 B x 262,144 tokens = 6,039,797,760 B = 5.625 GiB, on every TP rank
    assert kv_bytes_per_token(MS4_KV) * 262_144 == int(5.625 * GIB)


@pytest.mark.parametrize(
    ("tp", "expected"),
    [
        (1, 73_728),  # 2 x 8 KV heads x 64 head_dim x 36 layers x 2 B
        (2, 36_864),  # 4 heads per rank
        (8, 9_216),  # 1 head per rank
        (16, 9_216),  # fewer heads than ranks: vLLM replicates, a rank still holds one head
    ],
)
def test_gqa_kv_is_split_across_ranks(tp: int, expected: int) -> None:
    assert kv_bytes_per_token(GPT_OSS_KV, "auto", tp) == expected


def test_reserve_grows_with_batched_tokens() -> None:
    # 2 GiB + 0.35 GiB per 1024 tokens: 8192 tokens -> 2 + 2.8 = 4.8 GiB
    assert activation_bytes(8192) == 2 * GIB + int(0.35 * GIB) * 8
    assert activation_bytes(16384) - activation_bytes(8192) == int(0.35 * GIB) * 8
    # + non-torch 0.55 GiB + CUDA graphs 1 GiB
    assert reserve_bytes(8192) == 2 * GIB + int(0.35 * GIB) * 8 + int(0.55 * GIB) + GIB
    assert reserve_bytes(8192, cuda_graphs=False) == reserve_bytes(8192) - GIB


def test_h200_tp2_fp8_kv_capacity_by_hand() -> None:
    total = 143_771 * MIB  # 150,754,820,096 B as NVML reports on a real H200
    requested = int(total * 0.9)  # 135,679,338,086
    weights = 111_000_000_000 // 2  # 55,500,000,000 per GPU
    budget = requested - weights - reserve_bytes(8192)  # 73,361,077,507
    assert budget == 73_361_077_507
    sizing = size(SizingInput(total, 2, 0.9, MS4.weight_bytes, MS4_KV, 262_144))
    assert sizing.kv_budget_bytes == budget
    assert sizing.kv_tokens == 199_004 * 16 == 3_184_064  # whole 16-token blocks of 368,640 B
    assert sizing.full_length_sequences == 12
    assert sizing.verdict == "fits"
    assert sizing.max_fitting_model_len == 3_184_064


def test_reduced_context_verdict_names_the_context_that_fits() -> None:
    h100 = gpu_kinds()["h100-sxm"].memory_bytes  # 81,559 MiB
    # 0.79 x 85,520,809,984 = 67,561,439,887 - 55.5e9 - 6,818,260,579 = 5,243,179,308 B -> 14,223 blocks
    sizing = size(SizingInput(h100, 2, 0.79, MS4.weight_bytes, MS4_KV, 262_144))
    assert sizing.kv_tokens == 14_223 * 16 == 227_568
    assert sizing.verdict == "fits-with-reduced-context"
    assert "set max_model_len to 227,568 or less" in sizing.reasons[0]


def test_weights_larger_than_the_gpu_do_not_fit() -> None:
    h100 = gpu_kinds()["h100-pcie"].memory_bytes
    sizing = size(SizingInput(h100, 1, 0.9, MS4.weight_bytes, MS4_KV, 262_144))
    assert sizing.verdict == "does-not-fit"
    assert sizing.kv_tokens == 0
    assert "103.4 GiB/GPU" in sizing.reasons[0]


def test_start_gate_counts_memory_held_by_other_processes() -> None:
    total = 143_771 * MIB
    ok = size(SizingInput(total, 2, 0.9, MS4.weight_bytes, MS4_KV, 262_144, free_memory_bytes=total - 600 * MIB))
    assert ok.start_gate_ok is True and ok.verdict == "fits"
    # a co-tenant holding 40 GiB: free 100.4 GiB < 0.9 x 140.4 GiB = 126.4 GiB; 100.4 / 140.4 = 0.715
    busy = size(SizingInput(total, 2, 0.9, MS4.weight_bytes, MS4_KV, 262_144, free_memory_bytes=total - 40 * GIB))
    assert busy.start_gate_ok is False
    assert busy.verdict == "does-not-fit"
    assert "lower gpu_memory_utilization to 0.71 or less" in busy.reasons[0]


def test_pinned_kv_budget_only_converts_to_tokens() -> None:
    sizing = size(SizingInput(80 * GIB, 1, 0.9, 0, MS4_KV, 1024, kv_cache_bytes=10 * GIB))
    assert sizing.kv_tokens == (10 * GIB // (23_040 * 16)) * 16


def test_hf_config_shapes() -> None:
    mla = KvShape.from_model_config(
        {"text_config": {"num_hidden_layers": 36, "kv_lora_rank": 256, "qk_rope_head_dim": 64}}
    )
    assert kv_bytes_per_token(mla) == 23_040
    llama70b = KvShape.from_model_config(
        {"num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "hidden_size": 8192}
    )
    assert kv_bytes_per_token(llama70b) == 2 * 8 * 128 * 80 * 2  # 327,680
    mistral_native = KvShape.from_model_config({"n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "head_dim": 128})
    assert kv_bytes_per_token(mistral_native, "fp8", 2) == 2 * 4 * 128 * 32 * 1


def _size_cli(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "ms4fleet.cli", "size", *args, "--json"], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_size_cli_on_a_gqa_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "num_hidden_layers": 80,
                "num_attention_heads": 64,
                "num_key_value_heads": 8,
                "hidden_size": 8192,
                "max_position_embeddings": 131072,
            }
        )
    )
    out = _size_cli(
        "--model-config", str(config), "--gpu-mem-gib", "80", "--tp", "4", "--util", "0.9", "--weights-gib", "131.4"
    )
    # 2 x (8/4 heads) x 128 x 80 x 2 B = 81,920 B per token per GPU
    assert out["kv_bytes_per_token"] == 81_920
    budget = 0.9 * 80 - 131.4 / 4 - reserve_bytes(8192) / GIB
    assert out["kv_budget_gib"] == pytest.approx(budget, abs=1e-3)
    assert out["kv_tokens"] == int(budget * GIB) // (81_920 * 16) * 16


def test_size_cli_converts_a_pinned_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"num_hidden_layers": 36, "kv_lora_rank": 256, "qk_rope_head_dim": 64}))
    out = _size_cli("--model-config", str(config), "--kv-cache-gib", "5.625")
    assert out == {
        "model_config": str(config),
        "kv": "mla",
        "tp": 1,
        "kv_bytes_per_token": 23_040,
        "kv_budget_gib": 5.625,
        "kv_tokens": 262_144,
    }
