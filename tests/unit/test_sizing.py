"""Every sizing formula against values computed by hand (the arithmetic is in each comment)."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ms4fleet.catalog import GIB, MIB, gpu_kinds, model_profiles
from ms4fleet.sizing import (
    CUDA_CONTEXT_BYTES,
    VERDICT_MARGIN_BYTES,
    KvShape,
    ModelShape,
    SizingInput,
    activation_bytes,
    kv_bytes_per_token,
    reserve,
    safetensors_weight_bytes,
    sequence_kv_bytes,
    size,
    vllm_default_max_num_batched_tokens,
    vllm_default_max_num_seqs,
)

MS4 = model_profiles()["mistral-small-4-fp8"]
MS4_KV = KvShape.from_profile(MS4)
MS4_SHAPE = ModelShape.from_profile(MS4)
GPT_OSS = model_profiles()["gpt-oss-120b"]
GPT_OSS_KV = KvShape.from_profile(GPT_OSS)
H200 = 150_109_880_320  # CUDA total measured on the real H200 (tests/data/h200/2026-12-02)
H100 = gpu_kinds()["h100-sxm"].cuda_memory_bytes  # 81,079 MiB


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
    assert sequence_kv_bytes(MS4_KV, 262_144) == int(5.625 * GIB)


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


def test_sliding_window_layers_hold_the_window_not_the_sequence() -> None:
    # gpt-oss-120b, TP1: a layer-token is 2 x 8 x 64 x 2 = 2,048 B. 18 full layers hold all 131,072 tokens;
    # 18 sliding layers hold cdiv(128 - 1 + 8192, 16) + 1 = 521 blocks = 8,336 tokens.
    need = sequence_kv_bytes(GPT_OSS_KV, 131_072, max_num_batched_tokens=8192)
    assert need == 2048 * (18 * 131_072 + 18 * 8_336) == 5_139_136_512
    # all 36 layers counted as full attention would be 9 GiB: 75 % more than vLLM asks for
    assert kv_bytes_per_token(GPT_OSS_KV) * 131_072 == 9 * GIB


def test_vllm_defaults_follow_the_gpu_class() -> None:
    # EngineArgs.get_batch_defaults: >= 70 GiB (CUDA total) and not an A100 -> 8192 / 1024 for `vllm serve`
    assert vllm_default_max_num_batched_tokens(H100, "NVIDIA H100 80GB HBM3") == 8192
    assert vllm_default_max_num_batched_tokens(H100, "NVIDIA H100 80GB HBM3", offline=True) == 16384
    assert vllm_default_max_num_batched_tokens(int(79.15 * GIB), "NVIDIA A100-SXM4-80GB") == 2048
    assert vllm_default_max_num_batched_tokens(int(44.4 * GIB), "NVIDIA L40S") == 2048
    assert vllm_default_max_num_seqs(H200, "NVIDIA H200") == 1024
    assert vllm_default_max_num_seqs(int(44.4 * GIB), "NVIDIA L40S") == 256
    assert {vllm_default_max_num_batched_tokens(k.cuda_memory_bytes, k.name) for k in gpu_kinds().values()} == {8192}


def test_activation_peak_term_by_term() -> None:
    # Mistral Small 4 at TP2, 8192 batched tokens, 64 sequences, current vLLM:
    # base 0.16 GiB; sampler 64 x 131,072 x 14.2 B = 119,118,643 < dense forward 8192 x 2 x (6 x 4096 +
    # 3 x 1024) = 452,984,832; MoE workspace 8192 x 4 x 2 x (max(2 x 1024, 4096) + 1024) = 335,544,320;
    # encoder 0.3 GiB (multimodal)
    expected = int(0.16 * GIB) + 452_984_832 + 335_544_320 + int(0.3 * GIB)
    assert activation_bytes(MS4_SHAPE, 8192, 64, tp=2) == expected == 1_282_450_390
    # vLLM's default 1024 sequences: the sampler wins, 1024 x 131,072 x 14.2 B = 1,905,891,737.6
    assert activation_bytes(MS4_SHAPE, 8192, 1024, tp=2) - expected == 1_905_891_738 - 452_984_832
    # before vLLM 0.17 the sampler kept 35.4 B per logit and the base was 0.43 GiB
    old = activation_bytes(MS4_SHAPE, 8192, 1024, tp=2, vllm_version="0.11.0")
    assert old == int(0.43 * GIB) + 4_751_307_572 + 335_544_320 + int(0.3 * GIB)


def test_reserve_adds_nccl_buffers_at_tp_and_graphs_from_vllm_0_21() -> None:
    one = reserve(MS4_SHAPE, tp=1, max_num_batched_tokens=8192, max_num_seqs=64)
    two = reserve(MS4_SHAPE, tp=2, max_num_batched_tokens=8192, max_num_seqs=64)
    assert one.non_torch_bytes == int(0.30 * GIB) and two.non_torch_bytes == int(2.25 * GIB)
    # 1 GiB + 0.01 GiB x 36 layers, subtracted by vLLM 0.21 and later, never with --enforce-eager
    assert two.cuda_graph_bytes == GIB + int(0.01 * GIB) * 36 == 1_460_288_872
    eager = reserve(MS4_SHAPE, tp=2, max_num_batched_tokens=8192, max_num_seqs=64, cuda_graphs=False)
    assert eager.cuda_graph_bytes == 0
    older = reserve(MS4_SHAPE, tp=2, max_num_batched_tokens=8192, max_num_seqs=64, vllm_version="0.20.1")
    assert older.cuda_graph_bytes == 0
    assert two.total_bytes == two.activation_bytes + two.non_torch_bytes + two.cuda_graph_bytes


def test_h200_tp2_fp8_kv_capacity_by_hand() -> None:
    requested = int(H200 * 0.9)  # 135,098,892,288 of CUDA's 150,109,880,320
    weights = 111_000_000_000 // 2  # 55,500,000,000 per GPU
    held = 1_282_450_390 + int(2.25 * GIB) + 1_460_288_872  # activation + non-torch + graphs = 5,158,658,366
    budget = requested - weights - held
    assert budget == 74_440_233_922
    sizing = size(SizingInput(H200, 2, 0.9, MS4.weight_bytes, MS4_KV, 262_144, model=MS4_SHAPE, max_num_seqs=64))
    assert sizing.kv_budget_bytes == budget and sizing.reserve_bytes == held
    assert sizing.margin_bytes == VERDICT_MARGIN_BYTES == int(1.6 * GIB)
    # (74,440,233,922 - 1,717,986,918) // (16 x 23,040) = 197,271 whole blocks
    assert sizing.kv_tokens == 197_271 * 16 == 3_156_336
    assert sizing.full_length_sequences == 12
    assert sizing.verdict == "fits"
    assert sizing.max_fitting_model_len == 3_156_336


def test_reduced_context_verdict_names_the_context_that_fits() -> None:
    # 0.79 x 85,017,493,504 = 67,163,819,868 - 55.5e9 - 5,158,658,366 - 1,717,986,918 = 4,787,174,584 B
    # -> 12,986 blocks of 368,640 B
    sizing = size(SizingInput(H100, 2, 0.79, MS4.weight_bytes, MS4_KV, 262_144, model=MS4_SHAPE, max_num_seqs=64))
    assert sizing.kv_tokens == 12_986 * 16 == 207_776
    assert sizing.verdict == "fits-with-reduced-context"
    assert "set max_model_len to 207,776 or less" in sizing.reasons[0]


def test_weights_larger_than_the_gpu_do_not_fit() -> None:
    sizing = size(SizingInput(H100, 1, 0.9, MS4.weight_bytes, MS4_KV, 262_144, model=MS4_SHAPE, max_num_seqs=64))
    assert sizing.verdict == "does-not-fit"
    assert sizing.kv_tokens == 0
    assert "103.4 GiB/GPU (TP=1)" in sizing.reasons[0]


def test_each_gpus_memory_splits_into_what_plan_html_draws() -> None:
    """plan --json's sizing.gpu_memory: the H200 TP2 case above, term by term, summing to the CUDA total."""
    sizing = size(SizingInput(H200, 2, 0.9, MS4.weight_bytes, MS4_KV, 262_144, model=MS4_SHAPE, max_num_seqs=64))
    memory = sizing.to_dict()["gpu_memory"]
    assert memory == {
        "total": H200,
        "requested": 135_098_892_288,
        "weights": 55_500_000_000,
        "activation": 1_282_450_390,
        "non_torch": int(2.25 * GIB),
        "cuda_graphs": 1_460_288_872,
        "kv_cache": 74_440_233_922,
        "kv_margin": int(1.6 * GIB),
        "free": H200 - 135_098_892_288,
        "over": 0,
    }
    parts = ("weights", "activation", "non_torch", "cuda_graphs", "kv_cache", "free")
    assert sum(memory[k] for k in parts) == memory["total"]
    # Weights and reserve past what vLLM may take: no KV cache, and by how much it is short.
    short = size(SizingInput(H100, 1, 0.9, MS4.weight_bytes, MS4_KV, 262_144, model=MS4_SHAPE, max_num_seqs=64))
    lost = short.gpu_memory()
    assert lost["kv_cache"] == lost["free"] == 0
    assert lost["over"] == short.weights_per_gpu_bytes + short.reserve_bytes - short.requested_bytes > 0


def test_gpt_oss_on_one_h100_at_vllm_defaults_is_never_fits() -> None:
    # vllm#27508: 0.95 on one H100 with 1024 batched tokens and vLLM's 1024 sequences left 1.71 GiB; one
    # 131,072-token sequence needs 4.8 GiB (sliding layers counted as vLLM does). Not "fits".
    sizing = size(
        SizingInput(
            H100,
            1,
            0.95,
            GPT_OSS.weight_bytes,
            GPT_OSS_KV,
            131_072,
            max_num_batched_tokens=1024,
            model=ModelShape.from_profile(GPT_OSS),
            max_num_seqs=1024,
            vllm_version="0.11.0",
            gpu_name="NVIDIA H100 80GB HBM3",
        )
    )
    assert sizing.verdict == "fits-with-reduced-context"
    assert 0 < sizing.max_fitting_model_len < 131_072


def test_start_gate_counts_memory_held_by_other_processes_and_the_cuda_context() -> None:
    total = 143_771 * MIB
    free = total - 600 * MIB
    ok = size(SizingInput(total, 2, 0.9, MS4.weight_bytes, MS4_KV, 262_144, free_memory_bytes=free, model=MS4_SHAPE))
    assert ok.start_gate_ok is True and ok.verdict == "fits"
    # exactly the request free is not enough: vLLM's own CUDA context (620.8 MiB) comes first
    tight = size(
        SizingInput(
            total, 2, 0.9, MS4.weight_bytes, MS4_KV, 262_144, free_memory_bytes=int(total * 0.9), model=MS4_SHAPE
        )
    )
    assert tight.start_gate_ok is False and CUDA_CONTEXT_BYTES == 650_969_088
    # a co-tenant holding 40 GiB: (100.4 - 0.6) / 140.4 GiB = 0.710
    busy = size(
        SizingInput(
            total, 2, 0.9, MS4.weight_bytes, MS4_KV, 262_144, free_memory_bytes=total - 40 * GIB, model=MS4_SHAPE
        )
    )
    assert busy.start_gate_ok is False
    assert busy.verdict == "does-not-fit"
    assert "lower gpu_memory_utilization to 0.71 or less" in busy.reasons[0]


def test_pinned_kv_budget_only_converts_to_tokens() -> None:
    sizing = size(SizingInput(80 * GIB, 1, 0.9, 0, MS4_KV, 1024, kv_cache_bytes=10 * GIB))
    assert sizing.kv_tokens == (10 * GIB // (23_040 * 16)) * 16
    assert sizing.margin_bytes == 0


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
    gpt_oss = KvShape.from_model_config(
        {
            "num_hidden_layers": 4,
            "num_attention_heads": 64,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "sliding_window": 128,
            "layer_types": ["sliding_attention", "full_attention"] * 2,
        }
    )
    assert (gpt_oss.sliding_window, gpt_oss.sliding_layers) == (128, 2)
    gemma3 = KvShape.from_model_config(
        {
            "text_config": {
                "num_hidden_layers": 34,
                "num_key_value_heads": 4,
                "head_dim": 256,
                "sliding_window": 1024,
                "sliding_window_pattern": 6,
            }
        }
    )
    assert gemma3.sliding_layers == 34 - 34 // 6 == 29
    qwen = KvShape.from_model_config(
        {
            "num_hidden_layers": 28,
            "num_key_value_heads": 4,
            "head_dim": 128,
            "sliding_window": 131072,
            "use_sliding_window": False,
        }
    )
    assert qwen.sliding_layers == 0


def test_model_shapes_from_configs() -> None:
    mixtral = ModelShape.from_model_config(
        {
            "hidden_size": 4096,
            "vocab_size": 32000,
            "num_hidden_layers": 32,
            "intermediate_size": 14336,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
        }
    )
    assert (mixtral.num_experts, mixtral.moe_intermediate_size, mixtral.intermediate_size) == (8, 14336, 0)
    deepseek = ModelShape.from_model_config(
        {
            "hidden_size": 2048,
            "vocab_size": 102400,
            "num_hidden_layers": 27,
            "intermediate_size": 10944,
            "n_routed_experts": 64,
            "num_experts_per_tok": 6,
            "moe_intermediate_size": 1408,
            "n_shared_experts": 2,
            "first_k_dense_replace": 1,
        }
    )
    assert (deepseek.num_experts, deepseek.experts_per_token, deepseek.intermediate_size) == (64, 6, 10944)
    qwen_moe = ModelShape.from_model_config(
        {
            "hidden_size": 2048,
            "vocab_size": 151936,
            "num_hidden_layers": 24,
            "intermediate_size": 5632,
            "num_experts": 60,
            "num_experts_per_tok": 4,
            "moe_intermediate_size": 1408,
            "shared_expert_intermediate_size": 5632,
        }
    )
    assert qwen_moe.intermediate_size == 5632 and qwen_moe.moe_intermediate_size == 1408
    llava = ModelShape.from_model_config(
        {
            "vision_config": {},
            "text_config": {
                "hidden_size": 4096,
                "vocab_size": 32064,
                "num_hidden_layers": 32,
                "intermediate_size": 11008,
            },
        }
    )
    assert llava.multimodal and llava.num_experts == 0 and llava.intermediate_size == 11008
    with pytest.raises(ValueError, match="hidden_size, vocab_size"):
        ModelShape.from_model_config({"num_hidden_layers": 32})


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]]) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape, nbytes) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def test_weights_from_safetensors_headers_and_index(tmp_path: Path) -> None:
    # two shards: 4 x 8 BF16 (64 B) + 16 FP8 (16 B); 3 x 3 F32 (36 B)
    _write_safetensors(tmp_path / "a.safetensors", {"w": ("BF16", [4, 8], 64), "q": ("F8_E4M3", [16], 16)})
    _write_safetensors(tmp_path / "b.safetensors", {"n": ("F32", [3, 3], 36)})
    assert safetensors_weight_bytes(sorted(tmp_path.glob("*.safetensors"))) == 116
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 238_000_000_000}, "weight_map": {}}))
    assert safetensors_weight_bytes([index]) == 238_000_000_000


def test_catalog_h200_cuda_total_is_the_measured_one() -> None:
    # torch.cuda.mem_get_info() on the real H200, and NVML's total less its reservation: the same bytes
    text = (Path(__file__).parents[1] / "data" / "h200" / "2026-12-02" / "cuda-memory.txt").read_text()
    measured = json.loads(text[text.index("{") :])
    cuda_total = measured["cuda_mem_get_info_after_context"]["total"]
    assert cuda_total == measured["nvml_v2"]["total"] - measured["nvml_v2"]["reserved"] == 150_109_880_320
    assert gpu_kinds()["h200-sxm"].cuda_memory_bytes == cuda_total
    assert gpu_kinds()["h200-sxm"].memory_bytes == measured["nvml_v1"]["total"]  # nvidia-smi's 143,771 MiB
    # what the CUDA context itself takes before vLLM checks free memory
    assert measured["cuda_mem_get_info_after_context"]["used"] == CUDA_CONTEXT_BYTES


def test_every_catalog_gpu_plans_from_less_than_nvidia_smi_reports() -> None:
    for kind in gpu_kinds().values():
        assert 0.99 * kind.memory_bytes < kind.cuda_memory_bytes < kind.memory_bytes, kind.id


def _size_cli(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "ms4fleet.cli", "size", *args, "--json"], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_size_cli_on_a_gqa_config(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "num_hidden_layers": 80,
                "num_attention_heads": 64,
                "num_key_value_heads": 8,
                "hidden_size": 8192,
                "intermediate_size": 28672,
                "vocab_size": 128256,
                "max_position_embeddings": 131072,
            }
        )
    )
    out = _size_cli(
        "--model-config", str(config), "--gpu", "h100-sxm", "--tp", "4", "--util", "0.9", "--weights-gib", "131.4"
    )
    # 2 x (8/4 heads) x 128 x 80 x 2 B = 81,920 B per token per GPU; vLLM's H100 defaults: 8192 / 1024
    assert out["kv_bytes_per_token"] == 81_920
    assert (out["max_num_batched_tokens"], out["max_num_seqs"]) == (8192, 1024)
    # sampler 1024 x 128,256 x 14.2 B beats the dense forward 8192 x 2 x (6 x 8192 + 3 x 7168)
    activation = int(0.16 * GIB) + int(1024 * 128_256 * 14.2 + 1)
    held = activation + int(2.25 * GIB) + GIB + int(0.01 * GIB) * 80
    budget = int(H100 * 0.9) - int(131.4 * GIB) // 4 - held
    assert out["kv_budget_gib"] == pytest.approx(budget / GIB, abs=1e-3)
    assert out["kv_tokens"] == (budget - int(1.6 * GIB)) // (81_920 * 16) * 16


def test_size_cli_reads_the_weights_from_the_safetensors_beside_the_config(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "num_hidden_layers": 2,
                "num_key_value_heads": 1,
                "head_dim": 64,
                "hidden_size": 256,
                "vocab_size": 1000,
                "intermediate_size": 512,
            }
        )
    )
    _write_safetensors(tmp_path / "model.safetensors", {"w": ("BF16", [1024, 1024], 2 * 1024 * 1024)})
    out = _size_cli("--model-config", str(config), "--gpu-mem-gib", "79.179", "--max-model-len", "4096")
    assert out["weights_per_gpu_gib"] == pytest.approx(2 / 1024, abs=1e-3)


def test_size_cli_converts_a_pinned_budget(tmp_path: Path) -> None:
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
    # vLLM counts whole 16-token blocks: 15.34428 GiB is 715,095 tokens by division, 44,693 blocks of 16
    assert int(15.34428 * GIB) // 23_040 == 715_095
    out = _size_cli("--model-config", str(config), "--kv-cache-gib", "15.34428")
    assert out["kv_tokens"] == 44_693 * 16 == 715_088
