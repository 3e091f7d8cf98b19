"""The no-op check (``ms4fleet_pyinfra.converged``): a host answering exactly what the core wants has no
differences; each way a host can drift from it is named, so the full deploy runs."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ms4fleet import paths
from ms4fleet.config import HostConfig
from ms4fleet.provision import DAEMON_JSON, KEYRING, OsRelease, daemon_json, provision_plan
from ms4fleet.serving import plan_host
from ms4fleet.weights.request import request_for_host
from ms4fleet_pyinfra.converged import VERIFIED_FILE, Desired, differences, snapshot_script
from ms4fleet_pyinfra.facts import Sections
from tests.pyinfra import harness

REVISION = "5e" * 20


def desired(**gpu: Any) -> Desired:
    data = {
        "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8, **gpu},
        "ms4fleet_weights": {"source": "mirror", "mirror_url": "http://mirror.internal/hf", "revision": REVISION},
    }
    config = HostConfig.from_host_data("gpu-1", data)
    return Desired(
        config, provision_plan(config, OsRelease("debian", "12")), plan_host(config), request_for_host(config)
    )


def converged_output(want: Desired) -> list[str]:
    """What the snapshot script prints on a host that is exactly as planned (its sections, as a host would)."""
    driver = want.provision.driver
    assert driver is not None
    held = set(want.provision.held)
    dpkg = [f"{p}\t580.95.05-1\t{'h' if p in held else 'i'}i " for p in want.packages]
    files = [f"{digest}  {path}" for path, digest in {**want.files, KEYRING: "0" * 64, VERIFIED_FILE: "1" * 64}.items()]
    services: list[str] = []
    for name in want.services:
        unit = name if name.endswith(".service") else f"{name}.service"
        services += [f"Id={unit}", "ActiveState=active", "UnitFileState=enabled", ""]
    daemon = base64.b64encode(daemon_json("", want.config).encode()).decode()
    sections = {
        "dpkg": dpkg,
        "files": files,
        "daemon": [daemon],
        "services": services,
        "units": list(want.units),
        "user": ["yes"],
        "image": ["sha256:" + "ab" * 32],
        "weights": [json.dumps({"ok": True, "files": 3})],
        "driver": ["580.95.05"],
    }
    return [line for name, lines in sections.items() for line in (f"--ms4fleet-- {name}", *lines)]


def test_the_script_asks_for_every_section_the_check_reads() -> None:
    want = desired()
    script = snapshot_script(want)
    for name in ("dpkg", "files", "daemon", "services", "units", "user", "image", "weights", "driver"):
        assert f"echo '--ms4fleet-- {name}'" in script, name
    # Holds come from dpkg's status letters; one systemctl call answers active and enabled for every unit.
    assert "apt-mark" not in script
    assert script.count("systemctl ") == 1


def test_a_host_as_planned_has_no_differences() -> None:
    want = desired()
    assert differences(want, Sections().process(converged_output(want))) == []


def _drift(want: Desired, section: str, change: Any) -> list[str]:
    sections = Sections().process(converged_output(want))
    sections[section] = change(sections[section])
    return differences(want, sections)


UNIT0 = "ms4fleet-vllm-0.service"


@pytest.mark.parametrize(
    ("section", "change", "expected"),
    [
        ("dpkg", lambda rows: [r.replace("\thi ", "\tii ") for r in rows], "package nvidia-driver-580-open not held"),
        ("dpkg", lambda rows: [r for r in rows if not r.startswith("docker.io")], "package docker.io missing"),
        ("dpkg", lambda rows: [r.replace("\tii ", "\trc ") for r in rows], "package docker.io missing"),
        ("files", lambda rows: [r for r in rows if not r.endswith(KEYRING)], f"{KEYRING} missing"),
        (
            "files",
            lambda rows: ["f" * 64 + "  " + r.split("  ")[1] if UNIT0 in r else r for r in rows],
            f"{paths.SYSTEMD_DIR}/{UNIT0} differs",
        ),
        (
            "services",
            lambda rows: ["ActiveState=failed" if r == "ActiveState=active" else r for r in rows],
            "docker not active",
        ),
        ("services", lambda rows: [r.replace("=enabled", "=disabled") for r in rows], f"{UNIT0} not enabled"),
        ("services", lambda rows: [], "docker not active"),
        ("units", lambda rows: [*rows, "ms4fleet-vllm-9.service"], "stale unit ms4fleet-vllm-9.service"),
        ("user", lambda rows: [], "user ms4fleet missing"),
        ("image", lambda rows: ["Error: No such image"], "image vllm/vllm-openai"),
        ("weights", lambda rows: [json.dumps({"ok": False})], "weights not verified"),
        ("weights", lambda rows: ["Traceback (most recent call last):"], "weights not verified"),
        ("daemon", lambda rows: [base64.b64encode(b'{"log-driver": "json-file"}').decode()], f"{DAEMON_JSON} lacks"),
        ("daemon", lambda rows: ["%%%"], f"{DAEMON_JSON} unreadable or missing"),
        ("driver", lambda rows: ["575.57.08"], "reboot needed"),
    ],
)
def test_each_drift_is_named(section: str, change: Any, expected: str) -> None:
    found = _drift(desired(), section, change)
    assert any(expected in line for line in found), found


def test_a_reboot_flag_left_by_another_package_is_not_a_difference() -> None:
    # /var/run/reboot-required after, say, a kernel update: the loaded driver is the installed one.
    want = desired()
    sections = Sections().process([*converged_output(want), "--ms4fleet-- reboot", "yes"])
    assert differences(want, sections) == []


def test_only_the_failing_unit_is_named() -> None:
    want = desired()
    found = _drift(
        want,
        "services",
        lambda rows: [
            "ActiveState=activating" if r == "ActiveState=active" and rows[i - 1] == f"Id={UNIT0}" else r
            for i, r in enumerate(rows)
        ],
    )
    assert found == [f"{UNIT0} not active"]


def test_unit_digests_are_of_the_planned_unit_text() -> None:
    want = desired()
    replica = want.serving.replicas[0]
    path = f"{paths.SYSTEMD_DIR}/{replica.unit_name}"
    assert want.files[path] == hashlib.sha256(replica.unit_text.encode()).hexdigest()


def test_the_loaded_driver_as_sysfs_reports_it_on_the_real_h200() -> None:
    # /sys/module/nvidia/version on the H200 host (tests/data/h200/2026-11-29): the same version nvidia-smi
    # printed there, without nvidia-smi's cost.
    capture = Path(__file__).parents[1] / "data" / "h200" / "2026-11-29" / "sys-module-version.txt"
    loaded = next(line.split(": ", 1)[1] for line in capture.read_text().splitlines() if line.startswith("sys_"))
    assert loaded == "580.159.04"
    want = desired()
    lines = converged_output(want)
    as_installed = [line.replace("580.95.05-1", "580.159.04-0ubuntu1") for line in lines]
    driver_at = as_installed.index("--ms4fleet-- driver") + 1
    as_installed[driver_at] = loaded
    assert differences(want, Sections().process(as_installed)) == []
    as_installed[driver_at] = "580.95.05"
    assert differences(want, Sections().process(as_installed)) == [
        "driver 580.159.04 installed, 580.95.05 loaded: reboot needed"
    ]


@pytest.mark.parametrize("os_text", ['ID=debian\nVERSION_ID="12"\n', 'ID=ubuntu\nVERSION_ID="24.04"\n'])
def test_a_converged_host_is_known_in_one_round_trip(os_text: str) -> None:
    # The whole deploy on pyinfra's fake connector: the only answered command is the snapshot with
    # /etc/os-release in front. A second fact (the OS alone) would get no answer: the host check would fail.
    os_release = OsRelease.parse(os_text)
    want = desired()
    want = Desired(want.config, provision_plan(want.config, os_release), want.serving, want.weights)
    answer = ["--ms4fleet-- os", *os_text.splitlines(), *converged_output(want)]
    host_data = {
        "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
        "ms4fleet_weights": {"source": "mirror", "mirror_url": "http://mirror.internal/hf", "revision": REVISION},
    }
    assert harness.plan(host_data, {"--ms4fleet-- os": answer}) == {"converged (nothing to do)": "noop"}
    # A host answering something else is not taken for converged.
    answer[answer.index("--ms4fleet-- user") + 1] = "no"
    assert "converged (nothing to do)" not in harness.plan(host_data, {"--ms4fleet-- os": answer})
