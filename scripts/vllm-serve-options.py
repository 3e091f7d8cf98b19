"""Print the option table of the installed vLLM's ``vllm serve`` parser as TOML (run with the vLLM venv's Python).

ms4fleet's core never imports vLLM: this table is stored in src/ms4fleet/catalog/vllm_options.toml, and
tests/vllm/test_vllm_options.py checks the stored table against the real parser.
Usage: ``"$VENV/bin/python" scripts/vllm-serve-options.py > src/ms4fleet/catalog/vllm_options.toml``
"""

import argparse
import json

import vllm
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.utils.argparse_utils import FlexibleArgumentParser


def option_table() -> tuple[str, bool, list[tuple[list[str], str]]]:
    top = FlexibleArgumentParser(prog="vllm")
    serve = ServeSubcommand().subparser_init(top.add_subparsers())
    rows = []
    for action in serve._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        nargs = action.nargs
        kind = "0" if nargs == 0 else ("1" if nargs is None else str(nargs))
        rows.append((sorted(action.option_strings, key=lambda s: (not s.startswith("--"), s)), kind))
    return vllm.__version__, serve.allow_abbrev, sorted(rows)


def main() -> None:
    version, abbrev, rows = option_table()
    print("# `vllm serve` options of the vLLM release below, written by scripts/vllm-serve-options.py: data only.")
    print("# nargs: 0 a flag, 1 one value, ? an optional value, * or + several values.")
    print(f"vllm_version = {json.dumps(version)}")
    print(f"allow_abbrev = {json.dumps(abbrev)}")
    for strings, kind in rows:
        print(f"\n[[option]]\nstrings = {json.dumps(strings)}\nnargs = {json.dumps(kind)}")


if __name__ == "__main__":
    main()
