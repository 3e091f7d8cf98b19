"""The controller's lock per fleet and the rollout journal: holder named, runs split, resumable chains."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import pytest

from ms4fleet.rollout.journal import (
    JOURNAL_NAME,
    FleetLock,
    Journal,
    LockedError,
    fleet_dir,
    fleet_id,
    summary,
    unfinished,
)
from ms4fleet.statedir import STATE_ENV
from ms4fleet_pyinfra.rollout.cli import register_rollout
from tests.rollout.test_cli import inventory


def test_a_second_lock_on_the_same_fleet_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first, second = FleetLock(tmp_path / "fleet"), FleetLock(tmp_path / "fleet")
    first.acquire()
    try:
        with pytest.raises(LockedError) as err:
            second.acquire()
        line = str(err.value)
        assert "\n" not in line and f"pid {os.getpid()}" in line and "user " in line and "since 20" in line
        assert str(first.path) in line
    finally:
        first.release()
    second.acquire()
    second.release()


def test_the_fleet_is_the_set_of_hosts_not_the_inventory_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(STATE_ENV, str(tmp_path))
    assert fleet_id(["b", "a"]) == fleet_id(["a", "b"]) != fleet_id(["a"])
    assert fleet_dir(["a", "b"]) == tmp_path / "rollouts" / fleet_id(["a", "b"])


def test_the_journal_is_private_and_survives_a_line_cut_short(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state" / JOURNAL_NAME)
    journal.write("start", targets={"gpu-1": "aa"}, resume=False)
    journal.write("phase", host="gpu-1", phase="drained", t=1.0, detail="")
    with open(journal.path, "a", encoding="utf-8") as f:
        f.write('{"event": "phase", "host": "gpu-1", "ph')
    assert [e["event"] for e in journal.read()] == ["start", "phase"]
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.path.parent.stat().st_mode) == 0o700


def test_a_killed_run_and_its_resumes_form_one_unfinished_rollout(tmp_path: Path) -> None:
    journal = Journal(tmp_path / JOURNAL_NAME)
    journal.write("start", targets={"gpu-1": "aa"}, resume=False)
    journal.write("end", outcome="complete", exit_code=0, stopped="")
    assert unfinished(journal.read()) == []
    journal.write("start", targets={"gpu-1": "bb"}, resume=False)
    journal.write("phase", host="gpu-1", phase="drained", t=1.5, detail="")
    # SIGKILL: no end. Then a resume that was interrupted.
    journal.write("start", targets={"gpu-1": "bb"}, resume=True)
    journal.write("interrupted", stopped="interrupted")
    chain = unfinished(journal.read())
    assert [run[0]["resume"] for run in chain] == [False, True]
    killed, interrupted = (summary(run) for run in chain)
    assert killed["ended"] == "controller died (no end in the journal)"
    assert killed["hosts"] == {"gpu-1": [{"phase": "drained", "t": 1.5, "detail": ""}]}
    assert interrupted["ended"] == "interrupted" and interrupted["resume"]
    journal.write("start", targets={"gpu-1": "bb"}, resume=True)
    journal.write("end", outcome="complete", exit_code=0, stopped="")
    assert unfinished(journal.read()) == []


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ms4fleet")
    register_rollout(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def test_a_rollout_of_a_locked_fleet_is_refused_with_one_line_before_any_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = inventory(tmp_path)
    held = FleetLock(fleet_dir(["gpu-1", "gpu-2"]))
    held.acquire()
    try:
        assert cli("rollout", str(path), "--report-dir", str(tmp_path / "r")) == 2
    finally:
        held.release()
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ms4fleet")]
    assert len(err) == 1 and err[0].startswith("ms4fleet: error: another rollout of this fleet is running (user ")
    assert f"pid {os.getpid()}" in err[0]


def test_resume_without_an_unfinished_rollout_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = inventory(tmp_path)
    assert cli("rollout", str(path), "--resume", "--report-dir", str(tmp_path / "r")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ms4fleet")]
    assert len(err) == 1 and "--resume: no unfinished rollout of this fleet" in err[0]
    # An interrupted rollout of another release: --resume refuses to roll out a different one.
    journal = Journal(fleet_dir(["gpu-1", "gpu-2"]) / JOURNAL_NAME)
    journal.write("start", targets={"gpu-1": "0" * 16, "gpu-2": "0" * 16}, resume=False)
    assert cli("rollout", str(path), "--resume", "--report-dir", str(tmp_path / "r")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ms4fleet")]
    assert len(err) == 1 and "another release for gpu-1, gpu-2 than the interrupted rollout" in err[0]
    assert json.loads(journal.path.read_text().splitlines()[-1])["event"] == "start"
