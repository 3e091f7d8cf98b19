"""The corpus of bad inventory FILES (tests/data/bad_inventories/files/): syntax, encodings, unreadable
files, inventories that misbehave when loaded, group ties, look-alike host names, one machine twice, unset
secret variables, unwritable directories. Each case runs through the real command line in a fresh
interpreter and must exit 2 with exactly one line on stderr (host and field, or file:line:col), no traceback
and nothing on stdout. The ``good-*`` cases are legal input that must keep working.

A case is a directory: the inventory (and its group_vars/, group_data/ ...) and ``case.toml``:
``inventory``, ``command`` (``{inventory}`` is replaced), ``exit``, ``expect`` (a part of the error line) and
``[env]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_inventories" / "files"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "case.toml").is_file())
# Variables a case may set; any the test process has are removed so that "unset" means unset.
_CASE_ENV = {"MS4FLEET_CORPUS_UNSET_KEY", "MS4FLEET_CORPUS_UNSET_TOKEN", "MS4FLEET_CORPUS_UNSET_SEQS"}


def _case(name: str) -> dict[str, Any]:
    return tomllib.loads((CORPUS / name / "case.toml").read_text(encoding="utf-8"))


def _run(name: str, tmp_path: Path) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    case = _case(name)
    # A copy: the command runs beside the inventory (group_data/ is read from there) and may write there.
    work = tmp_path / name
    shutil.copytree(CORPUS / name, work, symlinks=True)
    argv = [arg.replace("{inventory}", case["inventory"]) for arg in case["command"]]
    env = {k: v for k, v in os.environ.items() if k not in _CASE_ENV} | case.get("env", {})
    done = subprocess.run(
        [sys.executable, "-m", "ms4fleet.cli", *argv],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
    )
    return case, done


def test_the_corpus_is_large_and_covers_both_formats() -> None:
    bad = [c for c in CASES if _case(c)["exit"] == 2]
    assert len(bad) >= 25
    assert {_case(c)["inventory"].rsplit(".", 1)[-1] for c in bad} == {"py", "yml"}
    assert any(_case(c)["exit"] == 0 for c in CASES)


@pytest.mark.parametrize("name", [c for c in CASES if not c.startswith("good-")])
def test_bad_file_is_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    case, done = _run(name, tmp_path)
    assert done.returncode == case["exit"] == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    # "ms4fleet: error: ..." or argparse's "ms4fleet rollout: error: ..." or "ms4fleet weights fetch: ..."
    assert lines[0].startswith("ms4fleet"), lines[0]
    assert case["expect"] in lines[0], lines[0]
    assert done.stdout == ""


@pytest.mark.parametrize("name", [c for c in CASES if c.startswith("good-")])
def test_good_variant_still_plans(name: str, tmp_path: Path) -> None:
    case, done = _run(name, tmp_path)
    assert done.returncode == case["exit"] == 0, done.stderr
    assert "fits" in done.stdout
