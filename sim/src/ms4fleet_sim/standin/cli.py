"""``vllm serve MODEL [flags]`` argument parsing, from the flag set extracted from real vLLM (flags.json).

The parser is rebuilt with stdlib argparse from data, so error wording and exit status (2) are argparse's,
as in vLLM. The argv rewriting that vLLM's ``FlexibleArgumentParser`` does first is reproduced: underscores
in option names, ``-O3``, ``--model X`` moved to the positional, dotted JSON keys (``--cc.mode 3``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

FLAGS_FILE = Path(__file__).with_name("flags.json")

# Options whose values are credentials: never echoed to the log.
SECRET_DESTS = frozenset({"api_key", "hf_token"})
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class StartupError(Exception):
    """vLLM would raise this before serving: printed as the last line of a traceback, exit status 1.

    ``engine_core`` marks errors raised in vLLM's engine-core process (memory, weights), which vLLM logs
    there and then reports as "Engine core initialization failed" from the API server.
    """

    def __init__(self, exc_type: str, message: str, engine_core: bool = False) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.message = message
        self.engine_core = engine_core


TASK_HINT = (
    "\n\nHint: --task is not a vllm serve option. For embedding, reranking, or reward models, use "
    "--runner pooling. To adapt a generative model for pooling, also use --convert embed, --convert "
    "classify, or --convert reward."
)


class VllmArgumentParser(argparse.ArgumentParser):
    """argparse with vLLM's one addition to its errors: the hint for the removed ``--task`` flag."""

    task_hint = False

    def error(self, message: str) -> NoReturn:
        if (
            self.task_hint
            and message.startswith("unrecognized arguments:")
            and re.search(r"(^|\s)--task(=|\s|$)", message)
        ):
            message += TASK_HINT
        super().error(message)


def load_flags(path: Path = FLAGS_FILE) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def human_readable_int(value: str) -> int:
    """vLLM's ``human_readable_int``: ``1k`` = 1000, ``1K`` = 1024, ``25.6k`` = 25600."""
    value = value.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", value)
    if match:
        number, suffix = match.groups()
        if suffix in _DECIMAL:
            return int(float(number) * _DECIMAL[suffix])
        try:
            return int(number) * _BINARY[suffix]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"Decimals are not allowed with binary suffixes like {suffix}. "
                f"Did you mean to use {number}{suffix.lower()} instead?"
            ) from exc
    return int(value)


def human_readable_int_or_auto(value: str) -> int:
    """``-1`` or ``auto`` mean "fit to memory" (returned as -1)."""
    value = value.strip()
    if value == "-1" or value.lower() == "auto":
        return -1
    return human_readable_int(value)


def _keep(value: str) -> str:
    return value


_BASE_TYPES: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "json": _keep,
    "human_readable_int": human_readable_int,
    "human_readable_int_or_auto": human_readable_int_or_auto,
}


def _converter(type_name: str) -> Callable[[str], Any]:
    if not type_name.startswith("optional_"):
        return _BASE_TYPES[type_name]
    inner = _BASE_TYPES[type_name.removeprefix("optional_")]

    def convert(value: str) -> Any:
        if value in ("", "None"):
            return None
        try:
            return inner(value)
        except ValueError as exc:
            # vLLM's parse_type wording; for a function it includes its repr (name and address).
            raise argparse.ArgumentTypeError(f"Value {value} cannot be converted to {inner}.") from exc

    # argparse names the converter in "invalid X value" errors; vLLM's is called _optional_type.
    convert.__name__ = "_optional_type"
    return convert


def build_parser(flags: dict[str, Any]) -> VllmArgumentParser:
    """The top-level ``vllm`` parser with its ``serve`` subcommand."""
    top = VllmArgumentParser(prog="vllm", usage=flags["top_usage"].removeprefix("usage: ").rstrip("\n"), add_help=True)
    top.add_argument("-v", "--version", action="version", version=flags["vllm_version"])
    subparsers = top.add_subparsers(dest="subparser")
    serve = subparsers.add_parser(
        "serve",
        prog=flags["serve_prog"],
        usage=flags["serve_usage"].removeprefix("usage: ").rstrip("\n"),
        add_help=False,
    )
    for positional in flags["positionals"]:
        serve.add_argument(positional["dest"], nargs=positional["nargs"])
    for option in flags["options"]:
        _add_option(serve, option)
    return top


def _add_option(parser: argparse.ArgumentParser, option: dict[str, Any]) -> None:
    names: list[str] = option["flags"]
    action: str = option["action"]
    if action == "help":
        parser.add_argument(*names, action="help")
    elif action in ("store_true", "store_false", "count"):
        parser.add_argument(*names, dest=option["dest"], action=action)
    elif action == "boolean_optional":
        # BooleanOptionalAction adds the --no- form itself: give it the positive names only.
        positive = [n for n in names if not n.startswith("--no-")]
        parser.add_argument(*positive, dest=option["dest"], action=argparse.BooleanOptionalAction)
    else:
        choices = option["choices"]
        if choices is not None and option["type"].startswith("optional_"):
            choices = [*choices, None]
        parser.add_argument(
            *names,
            dest=option["dest"],
            action="append" if action == "append" else "store",
            nargs=option["nargs"],
            type=_converter(option["type"]),
            choices=choices,
        )


def rewrite_argv(args: Sequence[str]) -> list[str]:
    """What vLLM's FlexibleArgumentParser.parse_args does to argv before argparse sees it."""
    argv = list(args)
    if argv[:1] == ["serve"]:
        model_index = next((i for i, a in enumerate(argv) if re.match(r"^--model(=.+|$)", a)), None)
        if model_index is not None:
            if argv[model_index] == "--model" and model_index + 1 < len(argv):
                tag, rest = argv[model_index + 1], model_index + 2
            else:
                tag, rest = argv[model_index].removeprefix("--model="), model_index + 1
            argv = ["serve", tag, *argv[1:model_index], *argv[rest:]]
        if (
            len(argv) > 1
            and argv[1].startswith("-")
            and not any(re.match(r"^--config(=.+|$)", a) for a in argv)
            and any(re.match(r"^--served[-_]model[-_]name(=.+|$)", a) for a in argv)
        ):
            raise StartupError(
                "ValueError",
                "`model` should be provided as the first positional argument when using `vllm serve`. "
                "i.e. `vllm serve <model> --<arg> <value>`.",
            )
    if any(re.match(r"^--config(=.+|$)", a) for a in argv):
        # vLLM reads a YAML file here; the stand-in has no YAML parser (stdlib only) and says so.
        raise StartupError(
            "NotImplementedError",
            "the vLLM stand-in does not read --config files; pass the options on the command line",
        )
    processed: list[str] = []
    for position, arg in enumerate(argv):
        if arg.startswith("--"):
            key, sep, value = arg.partition("=")
            head, dot, tail = key[2:].partition(".")
            processed.append("--" + head.replace("_", "-") + dot + tail + sep + value)
        elif arg.startswith("-O") and arg != "-O":
            processed += ["--optimization-level", arg[3:] if arg[2:3] == "=" else arg[2:]]
        elif arg == "-O" and position + 1 < len(argv) and argv[position + 1] in {"0", "1", "2", "3"}:
            processed.append("--optimization-level")
        else:
            processed.append(arg)
    return _merge_dotted(processed)


def _merge_dotted(args: list[str]) -> list[str]:
    """``--cc.mode 3 --cc.x y`` becomes ``--cc '{"mode": 3, "x": "y"}'``, as in vLLM."""
    merged: dict[str, dict[str, Any]] = {}
    out: list[str] = []
    skip = False
    for position, arg in enumerate(args):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if not (arg.startswith("-") and "." in name):
            out.append(arg)
            continue
        if "=" in arg:
            value_str = arg.split("=", 1)[1]
        elif position + 1 < len(args):
            value_str, skip = args[position + 1], True
        else:
            out.append(arg)
            continue
        if name.endswith("+"):
            name, value_str = name[:-1], json.dumps(value_str.split(","))
        key, *keys = name.split(".")
        try:
            value: Any = json.loads(value_str)
        except json.JSONDecodeError:
            try:
                value = human_readable_int(value_str)
            except (ValueError, argparse.ArgumentTypeError):
                value = value_str
        node = merged.setdefault(key, {})
        for part in keys[:-1]:
            node = node.setdefault(part, {})
        node[keys[-1]] = value
    for key, value in merged.items():
        out += [key, json.dumps(value)]
    return out


@dataclass(frozen=True)
class ServeArgs:
    """The options of ``vllm serve`` the stand-in acts on (all others are accepted and ignored)."""

    model: str
    served_model_names: list[str]
    host: str | None
    port: int
    api_keys: list[str]
    tensor_parallel_size: int
    gpu_memory_utilization: float
    max_model_len: int | None
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    kv_cache_dtype: str
    kv_cache_memory_bytes: int | None
    block_size: int | None
    attention_backend: str | None
    enable_auto_tool_choice: bool
    tool_call_parser: str | None
    reasoning_parser: str
    tokenizer_mode: str
    load_format: str
    revision: str | None
    enforce_eager: bool
    # Seconds in-flight requests may finish after SIGTERM; 0 (vLLM's default) aborts them.
    shutdown_timeout: int
    non_default: dict[str, Any]


def parse_serve(argv: Sequence[str], flags: dict[str, Any] | None = None) -> ServeArgs:
    """Parse a ``vllm`` argv (without the program name). argparse exits 2 on bad flags, as vLLM does."""
    flags = flags if flags is not None else load_flags()
    parser = build_parser(flags)
    rewritten = rewrite_argv(argv)
    defaults = vars(parser.parse_args(["serve"]))
    parser.task_hint = list(argv[:1]) == ["serve"] and any(re.match(r"^--task(=.+|$)", a) for a in argv[1:])
    namespace = parser.parse_args(rewritten)
    if namespace.subparser != "serve":
        parser.print_help()
        raise SystemExit(0)
    ns = vars(namespace)
    if ns["enable_auto_tool_choice"] and not ns["tool_call_parser"]:
        raise StartupError("TypeError", "Error: --enable-auto-tool-choice requires --tool-call-parser")
    if ns["model_tag"] is None:
        raise StartupError("ValueError", "vllm serve needs a model: `vllm serve <model> --<arg> <value>`.")
    backends: list[str] = flags["attention_backends"]
    backend = ns["attention_backend"]
    if backend is not None and backend.upper() not in backends:
        raise StartupError(
            "ValueError",
            f"Unknown attention backend: '{backend}'. Valid options are: {', '.join(backends)}",
        )
    non_default = {
        k: ("<redacted>" if k in SECRET_DESTS else v)
        for k, v in ns.items()
        if k in defaults and v != defaults[k] and k != "subparser"
    }
    model: str = ns["model_tag"]
    max_model_len = ns["max_model_len"]
    return ServeArgs(
        model=model,
        served_model_names=list(ns["served_model_name"] or [model]),
        host=ns["host"],
        port=int(ns["port"]) if ns["port"] is not None else 8000,
        api_keys=list(ns["api_key"] or []),
        tensor_parallel_size=int(ns["tensor_parallel_size"] or 1),
        gpu_memory_utilization=(
            float(ns["gpu_memory_utilization"]) if ns["gpu_memory_utilization"] is not None else 0.92
        ),
        max_model_len=None if max_model_len is None else int(max_model_len),
        max_num_seqs=ns["max_num_seqs"],
        max_num_batched_tokens=ns["max_num_batched_tokens"],
        kv_cache_dtype=ns["kv_cache_dtype"] or "auto",
        kv_cache_memory_bytes=ns["kv_cache_memory_bytes"],
        block_size=ns["block_size"],
        attention_backend=backend.upper() if backend else None,
        enable_auto_tool_choice=bool(ns["enable_auto_tool_choice"]),
        tool_call_parser=ns["tool_call_parser"],
        reasoning_parser=ns["reasoning_parser"] or "",
        tokenizer_mode=ns["tokenizer_mode"] or "auto",
        load_format=ns["load_format"] or "auto",
        revision=ns["revision"],
        enforce_eager=bool(ns["enforce_eager"]),
        shutdown_timeout=int(ns["shutdown_timeout"] or 0),
        non_default=non_default,
    )
