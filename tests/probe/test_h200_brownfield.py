"""Replays the brownfield capture of the real H200 (2026-12-04, with this tree; tests/data/h200/brownfield.sh made it: Ubuntu
24.04, driver 580.159.04 open modules from the VM image's read-only mount, no package, DKMS or runfile owning
it, no systemd or Docker). The host probe's stack reading, `ms4fleet plan --probe` on it, and
`pyinfra @local deploy.py --dry` run there without any manage_driver setting: adopted, zero driver operations;
with driver_branch 570 the host is refused before anything is planned."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ms4fleet.adopt import classify
from ms4fleet.cli import main
from ms4fleet.config import HostConfig
from ms4fleet.hostplan import host_plan, stack_for
from ms4fleet.probe import parse_probe
from ms4fleet.provision import OsRelease
from tests.support.pyinfra_table import detected_changes

CAPTURE = Path(__file__).parents[1] / "data" / "h200" / "2026-12-04-brownfield"
INVENTORY = CAPTURE / "inventory.yml"


def test_the_capture_came_from_the_real_host_and_nothing_there_owns_the_driver() -> None:
    meta = (CAPTURE / "meta.txt").read_text()
    assert 'VERSION_ID="24.04"' in meta and "NVIDIA UNIX Open Kernel Module for x86_64  580.159.04" in meta
    assert "cannot access '/usr/bin/nvidia-uninstall'" in meta and "probe exit 0" in meta
    assert "dry default exit 0" in meta and "dry 570 exit 0" in meta
    report = parse_probe((CAPTURE / "probe.json").read_text())
    assert report.source == "nvml" and report.gpus[0].name == "NVIDIA H200"
    stack = report.stack
    assert stack is not None
    # dpkg answers (no NVIDIA or Docker package), modinfo and DKMS are absent, no runfile marker, no UEFI.
    assert stack.packages == {} and stack.module_file is None and stack.dkms is None
    assert stack.runfile_markers == () and stack.secure_boot.enabled is None
    facts = classify(report)
    assert (facts.owner, facts.loaded, facts.flavor, facts.answers) == ("external", "580.159.04", "open", True)


def test_plan_with_the_probe_adopts_the_driver(capsys: pytest.CaptureFixture[str]) -> None:
    probe = CAPTURE / "probe.json"
    args = ["plan", str(INVENTORY), "--json", "--os", "ubuntu:24.04", "--limit", "h200", "--probe", f"h200={probe}"]
    assert main(args) == 0
    plan = json.loads(capsys.readouterr().out)["hosts"][0]["plan"]
    assert "driver" not in [g["group"] for g in plan["packages"]]
    assert not [name for p in plan["packages"] for pin in p["pins"] for name in pin["names"] if "driver" in name]
    assert plan["stack"]["driver"]["action"] == "adopt"
    assert plan["stack"]["driver"]["reason"].startswith("driver 580.159.04 (open, loaded)")
    assert main(["plan", str(INVENTORY), "--limit", "h200", "--probe", str(probe)]) == 0
    assert "h200: driver adopt: driver 580.159.04" in capsys.readouterr().out


def test_plan_with_another_branch_refuses_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    probe = CAPTURE / "probe.json"
    assert main(["plan", str(INVENTORY), "--limit", "h200-570", "--probe", str(probe)]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # refused before any plan is printed
    [line] = out.err.splitlines()
    assert line.startswith("ms4fleet: error: h200-570: driver 580.159.04 (open, loaded)")
    assert "is not on driver_branch 570" in line and "driver_branch: 580" in line


def test_the_pyinfra_dry_run_without_manage_driver_plans_no_driver_operation() -> None:
    text = (CAPTURE / "pyinfra-dry-default.txt").read_text()
    assert "Ready: deploy.py" in text
    planned = detected_changes(text)
    assert planned["install cuda-toolkit-13-0"] == "1 (@local)"  # the table is read
    driver_ops = {name: n for name, n in planned.items() if re.search(r"driver|nouveau|persistenced|initramfs", name)}
    # The two operations every deploy asks (both answer "nothing to do" here); no driver install, hold or reboot.
    assert driver_ops == {
        "move held driver packages to their pinned version": "-",
        "reboot if the driver needs it": "-",
    }
    # The line the deploy logged there is the note the core makes today from the same probe.
    config = HostConfig.from_host_data("@local", {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 1}})
    report = parse_probe((CAPTURE / "probe.json").read_text())
    notes = host_plan(config, OsRelease("ubuntu", "24.04"), stack=stack_for(config, report)).notes
    assert f"[@local] {notes[0]}" in text and notes[0].startswith("driver: adopt: ")


def test_the_pyinfra_dry_run_with_driver_branch_570_plans_only_the_refusal() -> None:
    planned = detected_changes((CAPTURE / "pyinfra-dry-570.txt").read_text())
    assert planned == {"ms4fleet: host check": "1 (@local)"}
