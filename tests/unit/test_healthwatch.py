"""The standing GPU health reading (``ms4fleet.healthwatch``): the reader's ``--output``, the check's choice
between the kept reading and the reader, and the three files in every host's plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ms4fleet import healthwatch
from ms4fleet.config import HostConfig
from ms4fleet.hostplan import host_plan
from ms4fleet.hostscripts import source
from ms4fleet.provision import OsRelease

READER = Path(__file__).parents[2] / "src" / "ms4fleet" / "hostside" / "health.py"


def check_output(reading: Path) -> str:
    """What the check's health part prints on a host whose kept reading is at ``reading``."""
    command = healthwatch.read_command("echo READER-RAN").replace(healthwatch.READING, str(reading))
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_fresh_reading_is_taken_as_it_is(tmp_path: Path) -> None:
    reading = tmp_path / "reading.json"
    reading.write_text('{"gpus": []}\n')
    assert check_output(reading) == '{"gpus": []}\n'
    age(reading, healthwatch.FRESH_S - 5)
    assert check_output(reading) == '{"gpus": []}\n'


@pytest.mark.parametrize(
    ("content", "seconds"),
    [
        ('{"gpus": []}\n', healthwatch.FRESH_S + 5),  # the timer stopped or its reader keeps failing
        ('{"gpus": []}\n', -120),  # written "in the future": the clock was set back since
        ("", 0),  # empty: never a reading
        (None, 0),  # none: before the first deploy, or after a reboot
    ],
)
def test_any_other_reading_makes_the_check_run_the_reader(tmp_path: Path, content: str | None, seconds: int) -> None:
    reading = tmp_path / "reading.json"
    if content is not None:
        reading.write_text(content)
        age(reading, seconds)
    assert check_output(reading) == "READER-RAN\n"


def test_the_reader_replaces_its_output_whole_and_world_readable(tmp_path: Path) -> None:
    out = tmp_path / "reading.json"
    out.write_text("old")
    out.chmod(0o600)
    # No NVML and no nvidia-smi here: the reading says so (the core's parse_health turns it into "no driver").
    argv = [sys.executable, str(READER), "--source", "nvidia-smi", "--output", str(out)]
    env = {**os.environ, "PATH": str(tmp_path)}
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    reading = json.loads(out.read_text())
    assert reading["source"] is None and reading["gpus"] == [] and reading["schema"] == 1
    assert out.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reading.json"]


def test_every_host_plans_the_reader_its_service_and_its_timer() -> None:
    config = HostConfig.from_host_data("gpu-1", {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 8}})
    plan = host_plan(config, OsRelease("ubuntu", "24.04"))
    watch = {f.path: f for f in plan.files if f.kind == "health-watch"}
    assert list(watch) == list(healthwatch.PATHS)
    reader, service, timer = (watch[p] for p in healthwatch.PATHS)
    assert reader.content == source("health.py").decode() and reader.mode == 0o755
    assert (service.mode, timer.mode) == (0o644, 0o644)
    assert all((f.owner, f.group, f.after_change) == ("root", "root", healthwatch.AFTER_CHANGE) for f in watch.values())
    lines = service.content.splitlines()
    assert f"ExecStart=/usr/bin/python3 {healthwatch.READER} --output {healthwatch.READING}" in lines
    assert "Type=oneshot" in lines and "ProtectSystem=strict" in lines and "NoNewPrivileges=yes" in lines
    assert f"OnUnitActiveSec={healthwatch.INTERVAL_S}s" in timer.content.splitlines()
    assert healthwatch.READING.startswith("/run/") and f"RuntimeDirectory={healthwatch.RUNTIME_DIR}" in lines
    # Two missed runs are stale; one is not.
    assert 2 * healthwatch.INTERVAL_S < healthwatch.FRESH_S < 3 * healthwatch.INTERVAL_S + 5
    [unit] = [u for u in plan.units if u.name == healthwatch.TIMER]
    assert (unit.enabled, unit.active, unit.role) == (True, True, "provision")
