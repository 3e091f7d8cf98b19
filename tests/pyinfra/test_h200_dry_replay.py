"""Replays `pyinfra @local deploy.py --dry` captured on the real H200 host on 2026-11-29 (Ubuntu 24.04,
driver 580.159.04 from the VM image, no systemd; tests/data/h200/pyinfra-dry.sh made the capture): the
plan touches no driver, the probe read the real GPU through NVML, and the headroom verdict follows the
GPU's free memory (fits idle; does-not-fit with a co-tenant holding 120 GiB)."""

from __future__ import annotations

import re
from pathlib import Path

CAPTURE = Path(__file__).parents[1] / "data" / "h200" / "2026-11-29-pyinfra"


def _planned(text: str) -> dict[str, str]:
    """The "Detected changes" table: operation -> its Change cell."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\s+ms4fleet \| (.+?)\s{2,}(\S+(?: \(@local\))?)\s{2,}", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_idle_dry_run_plans_no_driver_change_and_reports_headroom() -> None:
    text = (CAPTURE / "pyinfra-dry-idle.txt").read_text()
    assert "Ready: deploy.py" in text
    planned = _planned(text)
    assert planned, text
    assert not [name for name in planned if "driver" in name and "reboot" not in name], planned
    assert planned["reboot if the driver needs it"] == "-"
    assert (
        "[@local] probe (nvml): 1 GPU(s), driver 580.159.04; plan 1 replica(s) of TP=1; headroom: replica 0 fits"
        in text
    )
    assert planned["headroom gate"] == "1 (@local)"


def test_cotenant_dry_run_reports_does_not_fit_with_the_holder() -> None:
    text = (CAPTURE / "pyinfra-dry-cotenant.txt").read_text()
    assert "headroom: replica 0 does-not-fit" in text
    assert re.search(
        r"GPU 0: [\d.]+ GiB available of [\d.]+ GiB needed: pid \d+ python3 \(no unit\) holds 120\.\d GiB", text
    )


def test_capture_came_from_the_real_host() -> None:
    meta = (CAPTURE / "meta.txt").read_text()
    assert 'VERSION_ID="24.04"' in meta and "idle exit 0" in meta and "cotenant exit 0" in meta
    assert "Driver Version: 580.159.04" in (CAPTURE / "nvidia-smi.txt").read_text()
