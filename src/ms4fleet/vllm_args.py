"""``serving.extra_args`` read the way ``vllm serve`` reads them, from the catalog's table of vLLM's own
option names (``catalog/vllm_options.toml``; the core never imports vLLM).

vLLM's FlexibleArgumentParser turns ``_`` into ``-`` in ``--names`` (up to a ``.``), takes ``--name.key v``
as JSON for ``--name``, ``-O3`` as ``--optimization-level 3``, and argparse resolves unique prefixes
(``--api`` is ``--api-key``). Every one of those spellings of a flag ms4fleet derives, or of one that would
put a secret into argv, is refused.

+ ``check_extra_args(["--enable-prefix-caching"])`` passes; ``check_extra_args(["--api_key", "sk-.."])``
  raises ``ValueError`` naming ``--api-key`` (never the value).
"""

from __future__ import annotations

import difflib
import re

from ms4fleet.catalog import VllmOption, vllm_options

# Flags ms4fleet derives itself (setting them through extra_args would fork the decision), and flags that
# change where vLLM reads its arguments or listens.
MANAGED = frozenset(
    {
        "--port",
        "--host",
        "--uds",
        "--model",
        "--config",
        "--tensor-parallel-size",
        "--served-model-name",
        "--max-model-len",
        "--gpu-memory-utilization",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--kv-cache-dtype",
        "--attention-backend",
        "--tokenizer-mode",
        "--config-format",
        "--load-format",
        "--tool-call-parser",
        "--reasoning-parser",
        "--enable-auto-tool-choice",
        "--default-chat-template-kwargs",
        "--disable-custom-all-reduce",
        "--shutdown-timeout",
    }
)
# Managed flags no serving.* setting stands for: what to say instead of "use the serving.* setting".
_DERIVED_ELSEWHERE = {
    "--shutdown-timeout": "set from the load balancer's drain window so a stop lets requests finish",
}
# Flags whose value is a secret: on a command line it is in every `ps` and in the unit file.
SECRET = frozenset({"--api-key", "--hf-token"})
_NUMBER = re.compile(r"\A-\d+(?:\.\d*)?\Z")


def _looks_like_value(word: str) -> bool:
    # argparse takes a word as a value unless it looks like an option: "-" alone and negative numbers are values.
    return word == "-" or not word.startswith("-") or bool(_NUMBER.match(word))


def _resolve(key: str) -> VllmOption:
    """The option a flag spelling selects, as vLLM's parser would; ValueError when none or several."""
    table = vllm_options()
    found = table.options.get(key)
    if found is not None:
        return found
    if key.startswith("-") and not key.startswith("--") and len(key) > 2 and key[:2] in table.options:
        return table.options[key[:2]]  # a short option with its value attached (-q fp8)
    matches = {o.canonical: o for s, o in table.options.items() if table.allow_abbrev and s.startswith(key)}
    if len(matches) == 1:
        return next(iter(matches.values()))
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:4]) + (", ..." if len(matches) > 4 else "")
        raise ValueError(f"{key!r} is an ambiguous abbreviation ({shown}): write the full option")
    close = difflib.get_close_matches(key, [s for s in table.options if s.startswith("--")], n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ValueError(f"{key!r} is not a `vllm serve` option of vLLM {table.vllm_version}{hint}")


def _refuse_managed(option: VllmOption, spelling: str) -> None:
    written = "" if spelling == option.canonical else f" (written {spelling!r})"
    if SECRET & set(option.strings):
        raise ValueError(
            f"passes a secret on the command line ({option.canonical}{written}): "
            "reference it with serving.api_key or weights.hf_token instead"
        )
    if option.canonical in _DERIVED_ELSEWHERE:
        raise ValueError(
            f"sets {option.canonical}{written}, which ms4fleet derives ({_DERIVED_ELSEWHERE[option.canonical]}): "
            "remove it"
        )
    if MANAGED & set(option.strings):
        raise ValueError(f"sets {option.canonical}{written}, which ms4fleet derives: use the serving.* setting instead")


def check_extra_args(args: list[str]) -> None:
    """Refuse managed or secret flags in any spelling, unknown options and stray positional words."""
    if ";" in args:
        # A lone ';' separates commands in a unit's ExecStart=: no vLLM option value is one.
        raise ValueError(f"word {args.index(';') + 1} is a lone ';', which systemd reads as a second command")
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if not word.startswith("-") or word == "-" or _NUMBER.match(word):
            raise ValueError(
                f"word {i} is neither an option nor an option's value: vllm serve takes the model "
                "from serving.model, and every extra word must follow the option it belongs to"
            )
        if word == "--":
            raise ValueError("holds a bare --, after which vLLM reads no options: remove it")
        if word.startswith("--"):
            key, eq, _ = word.partition("=")
            head, dot, _ = key[2:].partition(".")
            key = "--" + head.replace("_", "-")
            attached = bool(eq)
            # --name.field value: vLLM reads the next word as that field's value, whatever its nargs.
            dotted = bool(dot)
        elif word.startswith("-O"):
            # vLLM's own shorthand: -O3, -O=3 and -O 3 are --optimization-level.
            key, attached, dotted = "--optimization-level", word != "-O", False
        else:
            key, eq, _ = word.partition("=")
            attached, dotted = bool(eq) or (key not in vllm_options().options and len(key) > 2), False
        option = _resolve(key)
        _refuse_managed(option, key)
        if attached and option.nargs == "0":
            raise ValueError(f"gives {option.canonical} a value, but it is a flag that takes none")
        if attached:
            continue
        if dotted or option.nargs == "1":
            if i >= len(args) or not _looks_like_value(args[i]):
                raise ValueError(f"{option.canonical} needs a value after it")
            i += 1
        elif option.nargs in {"?", "*", "+"}:
            start = i
            while i < len(args) and _looks_like_value(args[i]) and (option.nargs != "?" or i == start):
                i += 1
            if option.nargs == "+" and i == start:
                raise ValueError(f"{option.canonical} needs at least one value after it")
