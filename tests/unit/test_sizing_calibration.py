"""The sizing model against public vLLM start-ups (tests/data/sizing/calibration.toml), and the README's
plan table against what `ms4fleet plan` prints."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ms4fleet.catalog import GIB
from ms4fleet.sizing import VERDICT_MARGIN_BYTES
from tests.support.sizing_calibration import (
    CALIBRATION,
    RunResult,
    error_table,
    evaluate,
    mistral_small_4_table,
    summary,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results() -> list[RunResult]:
    return evaluate()


def test_the_set_is_public_broad_and_large_enough(results: list[RunResult]) -> None:
    data = tomllib.loads(CALIBRATION.read_text(encoding="utf-8"))
    assert len(results) >= 25
    assert all(r.run["source"].startswith("https://") for r in results)
    models = data["models"]
    used = {r.run["model"] for r in results}
    assert any(models[m]["kv"] == "mla" for m in used), "an MLA model (DeepSeek)"
    assert any(models[m].get("num_experts", 0) >= 100 for m in used), "a large MoE (gpt-oss-120b)"
    assert any(models[m].get("sliding_window_layers", 0) for m in used), "sliding-window layers"
    assert len({m.split("-")[0] for m in used}) >= 8, "several model families"
    assert any(not r.run["started"] for r in results), "failed starts"


def test_kv_budget_within_10_percent_or_1_5_gib_on_90_percent_of_runs(results: list[RunResult]) -> None:
    stats = summary(results)
    print()  # the distribution, for `pytest -s` and for the log of a failing run
    for key, value in stats.items():
        print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    for r in results:
        if r.within_tolerance is False:
            assert r.error_bytes is not None
            print(f"  outside the band: {r.run['id']}: {r.error_bytes / GIB:+.2f} GiB")
    assert stats["within_tolerance"] >= 0.90


def test_no_failed_start_is_predicted_to_fit(results: list[RunResult]) -> None:
    failed = [r for r in results if not r.run["started"]]
    assert failed
    assert [r.run["id"] for r in failed if r.sizing.verdict == "fits"] == []


def test_the_margin_covers_every_over_prediction(results: list[RunResult]) -> None:
    # "fits" keeps VERDICT_MARGIN_BYTES in hand: no run had less KV budget than predicted minus the margin
    worst = max(r.error_bytes for r in results if r.error_bytes is not None)
    assert 0 < worst <= VERDICT_MARGIN_BYTES


def test_docs_carry_the_current_tables(results: list[RunResult]) -> None:
    docs = (ROOT / "docs" / "sizing.md").read_text(encoding="utf-8")
    assert error_table(results) in docs, "regenerate it: python -m tests.support.sizing_calibration"
    assert mistral_small_4_table() in docs, "regenerate it: python -m tests.support.sizing_calibration"


def test_readme_plan_is_what_plan_prints() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ms4fleet.cli", "plan", str(ROOT / "inventory" / "example.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    printed = "\n".join(line.rstrip() for line in done.stdout.splitlines())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```\n{printed}\n```" in readme
