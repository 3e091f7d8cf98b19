"""Replays `pyinfra @local deploy.py --dry` captured on the real H200 host on 2026-11-29 (Ubuntu 24.04,
driver 580.159.04 from the VM image, no systemd; tests/data/h200/pyinfra-dry.sh made the capture): the
plan touches no driver, the probe read the real GPU through NVML, and the headroom verdict follows the
GPU's free memory (fits idle; does-not-fit with a co-tenant holding 120 GiB). The same script ran the
quick converged check's own script there."""

from __future__ import annotations

import re
from pathlib import Path

from ms4fleet import healthwatch
from ms4fleet.config import HostConfig
from ms4fleet.converged import Desired, fingerprint, image_query, live_differences, quick_script
from ms4fleet.provision import PREFERENCES_FILE, UNATTENDED_FILE, OsRelease, provision_plan
from ms4fleet.serving import plan_host
from ms4fleet.weights.request import request_for_host
from ms4fleet_pyinfra.facts import Sections
from tests.support.pyinfra_table import detected_changes

CAPTURE = Path(__file__).parents[1] / "data" / "h200" / "2026-11-29-pyinfra"


def test_idle_dry_run_plans_no_driver_change_and_reports_headroom() -> None:
    text = (CAPTURE / "pyinfra-dry-idle.txt").read_text()
    assert "Ready: deploy.py" in text
    planned = detected_changes(text)
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


def test_the_quick_check_fingerprints_the_real_host_and_never_passes_there() -> None:
    # quick-check.sh is the script pyinfra sends, run as is on the H200 (Ubuntu 24.04, coreutils' stat and
    # findutils' find): the fingerprint holds the boot id, the loaded module's own version and a stat line
    # per file present; without Docker or systemd the live sections name the gaps, so no verdict is stored.
    output = (CAPTURE / "quick-check-output.txt").read_text().splitlines()
    sections = Sections().process(output)
    lines = sections["fingerprint"]
    assert re.fullmatch(r"[0-9a-f-]{36}", lines[0]), lines[0]
    assert "580.159.04" in lines
    stats = {line.split("|")[0]: line.split("|") for line in lines if line.startswith("/")}
    assert {"/var/lib/dpkg/status", "/etc/os-release", "/etc/passwd"} <= set(stats)
    # size, inode, mtime and ctime with nanoseconds, mode, owner, group
    assert all(len(fields) == 8 and re.search(r"\.\d{9} ", fields[4]) for fields in stats.values()), stats
    assert fingerprint(sections) is not None
    script = (CAPTURE / "quick-check.sh").read_text()
    config = HostConfig.from_host_data(
        "@local",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 1},
            "ms4fleet_provision": {"manage_driver": False},
            # The capture was made for a host without secrets: an open endpoint plans exactly that.
            "ms4fleet_serving": {"open_endpoint": True},
            "ms4fleet_weights": {"source": "path", "path": "/srv/ms4fleet/share", "revision": "5e" * 20},
        },
    )
    want = Desired(
        config, provision_plan(config, OsRelease("ubuntu", "24.04")), plan_host(config), request_for_host(config)
    )
    # Captured before the container stack was pinned and before unattended-upgrades got its blacklist: the
    # paths the script gained since are the apt preferences file (planned now without a managed driver) and
    # the unattended-upgrades file and the GPU health timer's three files (ms4fleet.healthwatch), which that host
    # lacks and stat skips; the services line gained the health timer.
    # It also asked the docker CLI for the image, which the script now asks Docker's API first (image_query).
    image = want.serving.image
    assert image is not None
    now = (
        quick_script(want)
        .replace(f"{PREFERENCES_FILE} ", "", 1)
        .replace(f"{UNATTENDED_FILE} ", "", 1)
        .replace(f" {healthwatch.TIMER} ", " ", 1)
        .replace(image_query(image), f"docker image inspect --format '{{{{.Id}}}}' {image}", 1)
    )
    for path in healthwatch.PATHS:
        now = now.replace(f"{path} ", "", 1)
    assert PREFERENCES_FILE in quick_script(want) and UNATTENDED_FILE in quick_script(want)
    assert script.strip() == now.strip()
    assert live_differences(want, sections)[:4] == [
        "image vllm/vllm-openai:v0.32.0 missing",
        "nginx not active",
        f"{healthwatch.TIMER} not active",
        "docker not active",
    ]
    assert "verdicts stored: 0" in (CAPTURE / "meta.txt").read_text()
