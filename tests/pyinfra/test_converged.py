"""The no-op check (``ms4fleet.converged``, as the pyinfra engine runs it): a host answering exactly what the
core wants has no differences; each way a host can drift from it is named, so the full deploy runs."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ms4fleet import apikey, paths, verdicts
from ms4fleet.config import HostConfig
from ms4fleet.converged import (
    STATE_FILES,
    VERIFIED_FILE,
    Desired,
    _script,
    check,
    check_data,
    differences,
    fingerprint,
    first_read_data,
    health_parts,
    live_differences,
    quick_script,
    record_command,
    snapshot_script,
    verified_record,
)
from ms4fleet.health import Exclusion
from ms4fleet.hostoutput import sections
from ms4fleet.hostplan import stack_for
from ms4fleet.probe import parse_probe
from ms4fleet.provision import DAEMON_JSON, KEYRING, OsRelease, daemon_json, provision_plan
from ms4fleet.secrets import secret_path
from ms4fleet.serving import ServingPlan, plan_host
from ms4fleet.statedir import STATE_ENV
from ms4fleet.weights.request import request_for_host
from ms4fleet_pyinfra.facts import Sections
from tests.pyinfra import harness

REVISION = "5e" * 20
# An open endpoint: no secret file for the fake host to hold (secrets: test_the_generated_key_is_part_of_the_digest).
HOST_DATA: dict[str, Any] = {
    "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
    "ms4fleet_serving": {"open_endpoint": True},
    "ms4fleet_weights": {
        "source": "mirror",
        "mirror_url": "https://mirror.internal/hf",
        "revision": REVISION,
        "manifest_sha256": "ab" * 32,
    },
}
FAKE_HOST = "@fake/gpu-1"  # pyinfra's name for harness.plan's host
FINGERPRINT = [
    "3f0e9c1a-5d2b-4c43-9a7e-0b6f1d2e3c4d",
    "0123456789abcdef0123456789abcdef",
    "/var/lib/dpkg/status|242412|4759980|2026-11-29 20:16:00.068788617 +0000|"
    "2026-11-29 20:16:00.068788617 +0000|644|0|0",
]


def desired(provision: dict[str, Any] | None = None, **gpu: Any) -> Desired:
    data = {**HOST_DATA, "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8, **gpu}}
    if provision:
        data["ms4fleet_provision"] = provision
    config = HostConfig.from_host_data("gpu-1", data)
    return Desired(
        config, provision_plan(config, OsRelease("debian", "12")), plan_host(config), request_for_host(config)
    )


def converged_output(want: Desired) -> list[str]:
    """What the snapshot script prints on a host that is exactly as planned (its sections, as a host would)."""
    held = set(want.provision.held)
    dpkg = [f"{p}\t580.95.05-1\t{'h' if p in held else 'i'}i " for p in want.packages]
    files = [f"{digest}  {path}" for path, digest in {**want.files, KEYRING: "0" * 64, VERIFIED_FILE: "1" * 64}.items()]
    services: list[str] = []
    for name in want.services:
        unit = name if name.endswith(".service") else f"{name}.service"
        services += [f"Id={unit}", "ActiveState=active", "UnitFileState=enabled", ""]
    daemon = base64.b64encode(daemon_json("", want.config).encode()).decode()
    sections = {
        "fingerprint": FINGERPRINT,
        "dpkg": dpkg,
        "files": files,
        "daemon": [daemon],
        "services": services,
        "units": list(want.units),
        "user": ["yes"],
        # Docker's inspect document of the image (the Engine API's, or the CLI's where curl cannot ask).
        "image": [json.dumps({"Id": "sha256:" + "ab" * 32, "RepoTags": ["vllm/vllm-openai:v0.32.0"]})],
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
        (
            "dpkg",
            lambda rows: [r.rsplit("\t", 1)[0] + "\trc " if r.startswith("docker.io") else r for r in rows],
            "package docker.io missing",
        ),
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
    want = desired(provision={"driver_version": "580.159.04"})
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
    assert harness.plan(HOST_DATA, {"--ms4fleet-- os": answer}) == {"converged (nothing to do)": "noop"}
    # A host answering something else is not taken for converged.
    answer[answer.index("--ms4fleet-- user") + 1] = "no"
    verdicts.forget(FAKE_HOST)
    assert "converged (nothing to do)" not in harness.plan(HOST_DATA, {"--ms4fleet-- os": answer})


def full_answer(want: Desired, os_text: str = 'ID=debian\nVERSION_ID="12"\n') -> list[str]:
    return ["--ms4fleet-- os", *os_text.splitlines(), *converged_output(want)]


def quick_answer(want: Desired, fingerprint_lines: list[str] = FINGERPRINT) -> list[str]:
    """What the quick script prints: the fingerprint and the live sections of a converged host."""
    sections = Sections().process(converged_output(want))
    out = ["--ms4fleet-- fingerprint", *fingerprint_lines]
    for name in ("services", "image"):
        out += [f"--ms4fleet-- {name}", *sections[name]]
    return out


def test_the_generated_key_is_part_of_the_digest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(STATE_ENV, str(tmp_path / "state"))
    config = HostConfig.from_host_data("gpu-1", {**HOST_DATA, "ms4fleet_serving": {}})
    want = Desired(
        config, provision_plan(config, OsRelease("debian", "12")), plan_host(config), request_for_host(config)
    )
    # Not made yet: the digest is that of an empty secret (never converged); the check creates nothing.
    assert want.secret_files == {"/etc/ms4fleet/secrets/api_key": hashlib.sha256(b"\n").hexdigest()}
    assert not apikey.key_path().exists()
    key = apikey.read_key(apikey.ensure_key())
    assert want.secret_files == {"/etc/ms4fleet/secrets/api_key": hashlib.sha256(f"{key}\n".encode()).hexdigest()}
    assert key not in snapshot_script(want) and key not in quick_script(want)


def test_the_fingerprint_covers_every_file_the_full_check_reads() -> None:
    config = HostConfig.from_host_data(
        "gpu-1", {**HOST_DATA, "ms4fleet_serving": {"api_key": {"env": "MS4FLEET_TEST_KEY"}}}
    )
    want = Desired(
        config, provision_plan(config, OsRelease("debian", "12")), plan_host(config), request_for_host(config)
    )
    quick = quick_script(want)
    stat_line = next(line for line in quick.splitlines() if line.startswith("stat "))
    secret = secret_path(config.serving.api_key, "api_key")  # type: ignore[arg-type]
    for path in (*want.files, *STATE_FILES, KEYRING, VERIFIED_FILE, DAEMON_JSON, paths.ENV_FILE, secret):
        assert f" {path}" in stat_line, path
    # The weights directory entry by entry, the boot, the machine and the loaded module.
    assert f"find -L {want.weights.dest} -printf" in quick
    assert "/proc/sys/kernel/random/boot_id /etc/machine-id /sys/module/nvidia/version" in quick
    # The full check prints the same fingerprint, before anything else it reads.
    full = snapshot_script(want)
    assert full.index("--ms4fleet-- fingerprint") < full.index("--ms4fleet-- dpkg")
    assert quick.split("echo '--ms4fleet-- services'")[0] in full
    # The quick check never hashes, queries dpkg, runs the weights verifier or asks the driver.
    for costly in ("sha256sum", "dpkg-query", "python3", "nvidia-smi"):
        assert costly not in quick, costly


def test_a_passed_full_check_is_remembered_and_the_next_run_asks_only_the_quick_check() -> None:
    want = desired()
    assert harness.plan(HOST_DATA, {"--ms4fleet-- os": full_answer(want)}) == {"converged (nothing to do)": "noop"}
    known = verdicts.load(FAKE_HOST)
    assert known is not None
    assert known.digest == want.digest and known.os == OsRelease("debian", "12")
    # Only the quick script is answered now: a full check would get no answer and fail the host.
    assert harness.plan(HOST_DATA, {"--ms4fleet-- fingerprint": quick_answer(want)}) == {
        "converged (nothing to do)": "noop"
    }


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda lines: [*lines[:2], lines[2].replace("|644|", "|600|")], id="a file's mode"),
        pytest.param(lambda lines: ["4ee1c0de-0000-4000-8000-000000000000", *lines[1:]], id="a reboot"),
        pytest.param(lambda lines: lines[:2], id="a file gone"),
    ],
)
def test_a_changed_fingerprint_runs_the_full_check(change: Any) -> None:
    want = desired()
    harness.plan(HOST_DATA, {"--ms4fleet-- os": full_answer(want)})
    quick = quick_answer(want, change(FINGERPRINT))
    # The full check then finds a drift (a unit's file): the whole deploy is planned, the verdict dropped.
    drifted = [line.replace("  /etc/systemd/system/ms4fleet-vllm-0", "  /nowhere") for line in full_answer(want)]
    planned = harness.plan(HOST_DATA, {"--ms4fleet-- os": drifted, "--ms4fleet-- fingerprint": quick})
    assert "converged (nothing to do)" not in planned
    assert verdicts.load(FAKE_HOST) is None


def test_a_stopped_unit_or_a_missing_image_runs_the_full_check() -> None:
    want = desired()
    sections = Sections().process(quick_answer(want))
    assert live_differences(want, sections) == []
    harness.plan(HOST_DATA, {"--ms4fleet-- os": full_answer(want)})
    stopped = [line.replace("ActiveState=active", "ActiveState=failed") for line in quick_answer(want)]
    assert "docker not active" in live_differences(want, Sections().process(stopped))
    # The fingerprint still matches, yet the full check runs and the deploy is planned to start docker again.
    full_stopped = [line.replace("ActiveState=active", "ActiveState=failed") for line in full_answer(want)]
    planned = harness.plan(HOST_DATA, {"--ms4fleet-- os": full_stopped, "--ms4fleet-- fingerprint": stopped})
    assert "converged (nothing to do)" not in planned
    # curl -f prints nothing for Docker's 404; the CLI's fallback prints its error on stderr, which is dropped.
    no_image = [line for line in quick_answer(want) if not line.startswith('{"Id"')]
    assert live_differences(want, Sections().process(no_image)) == ["image vllm/vllm-openai:v0.32.0 missing"]


def test_a_new_plan_is_never_judged_by_an_old_verdict() -> None:
    want = desired()
    harness.plan(HOST_DATA, {"--ms4fleet-- os": full_answer(want)})
    changed = {**HOST_DATA, "ms4fleet_runtime": {"image": "vllm/vllm-openai:v0.33.0"}}
    config = HostConfig.from_host_data("gpu-1", changed)
    assert Desired(config, want.provision, plan_host(config), want.weights).digest != want.digest
    # The quick script is answered as converged, but the digest differs: the full check runs and sees a drift.
    planned = harness.plan(changed, {"--ms4fleet-- fingerprint": quick_answer(want)})
    assert "converged (nothing to do)" not in planned


def test_verdicts_are_private_files_and_a_bad_one_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(verdicts.CACHE_ENV, str(tmp_path / "v"))
    verdict = verdicts.Verdict("d" * 64, OsRelease("ubuntu", "24.04"), "f" * 64)
    verdicts.store("gpu-1", verdict)
    assert verdicts.load("gpu-1") == verdict
    (entry,) = (tmp_path / "v").iterdir()
    assert entry.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "v").stat().st_mode & 0o777 == 0o700
    assert verdicts.load("gpu-2") is None
    entry.write_text("{not json")
    assert verdicts.load("gpu-1") is None
    verdicts.forget("gpu-1")
    assert not entry.exists()
    # Empty: the quick check is off; nothing is written or read.
    monkeypatch.setenv(verdicts.CACHE_ENV, "")
    verdicts.store("gpu-1", verdict)
    assert verdicts.load("gpu-1") is None
    # Unwritable: the deploy goes on (the next run does the full check).
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(verdicts.CACHE_ENV, str(blocker / "v"))
    verdicts.store("gpu-1", verdict)
    assert verdicts.load("gpu-1") is None


def test_the_fingerprint_is_of_its_section_only() -> None:
    sections = Sections().process(quick_answer(desired()))
    assert fingerprint(sections) == hashlib.sha256("\n".join(FINGERPRINT).encode()).hexdigest()
    assert fingerprint({}) is None


def test_the_core_check_is_engine_neutral() -> None:
    """``check`` with a plain reader (what the Ansible action passes): full check, verdict stored, then the
    quick check only; a host whose OS cannot be read is never converged."""
    want = desired()
    scripts: list[str] = []

    def host(answer: list[str]) -> Callable[[str], dict[str, list[str]]]:
        def read(script: str) -> dict[str, list[str]]:
            scripts.append(script)
            return sections(answer if "cat /etc/os-release" in script else quick_answer(want))

        return read

    name = "ansible/gpu-1"
    verdicts.forget(name)

    def plan_for(excluded: tuple[Exclusion, ...]) -> ServingPlan:
        return plan_host(want.config, excluded=excluded)

    first = check(name, want.config, plan_for, want.weights, host(full_answer(want)))
    assert (first.converged, first.quick, first.os) == (True, False, OsRelease("debian", "12"))
    assert len(scripts) == 1 and verdicts.load(name) is not None
    # No health section answered (no driver yet): every GPU planned, and why there is no reading.
    assert first.excluded == () and "not JSON" in first.health_error
    # On a host that converged (its driver in), a reading that fails is said louder.
    assert first.health_warning.startswith("GPU health unreadable on a converged host (")
    again = check(name, want.config, plan_for, want.weights, host(full_answer(want)))
    assert (again.converged, again.quick) == (True, True)
    assert scripts[1] == quick_script(want) + _script(health_parts())
    # quick=False always runs the full check.
    full = check(name, want.config, plan_for, want.weights, host(full_answer(want)), quick=False)
    assert (full.converged, full.quick) == (True, False) and "cat /etc/os-release" in scripts[2]
    # No /etc/os-release (or no answer at all): not converged, and the stored verdict is dropped.
    blind = check(name, want.config, plan_for, want.weights, host(converged_output(want)), quick=False)
    assert (blind.converged, blind.os, blind.differences) == (False, None, ("/etc/os-release unreadable",))
    assert blind.health_error and blind.health_warning == ""
    assert verdicts.load(name) is None
    silent = check(name, want.config, plan_for, want.weights, lambda script: {})
    assert not silent.converged


def test_the_first_read_an_engine_may_send_early_is_the_one_the_check_reads_first() -> None:
    """``first_read_data`` (what pyinfra sends before its deploy loads) is, byte for byte, the first script
    ``check_data`` reads: the full check's without a verdict or with ``quick=False``, the quick one while a
    stored verdict's plan still holds."""
    name = "early/gpu-1"
    config = HostConfig.from_host_data(name, HOST_DATA)
    want = desired()

    def first_script(quick: bool = True) -> str:
        scripts: list[str] = []

        def read(script: str) -> dict[str, list[str]]:
            scripts.append(script)
            return {}  # no answer: the check stops after its first read

        check_data(name, config, HOST_DATA, read, quick)
        return scripts[0]

    verdicts.forget(name)
    assert "cat /etc/os-release" in first_read_data(name, config, HOST_DATA)
    assert first_read_data(name, config, HOST_DATA) == first_script()
    verdicts.store(name, verdicts.Verdict(want.digest, OsRelease("debian", "12"), "f" * 64))
    assert first_read_data(name, config, HOST_DATA) == quick_script(want) + _script(health_parts())
    assert first_read_data(name, config, HOST_DATA) == first_script()
    assert first_read_data(name, config, HOST_DATA, quick=False) == first_script(quick=False)
    assert "cat /etc/os-release" in first_script(quick=False)
    verdicts.forget(name)


def health_answer(count: int, unhealthy: tuple[int, ...] = ()) -> list[str]:
    """The health section of a host of ``count`` GPUs: the real H200's NVML reading for each (an uncorrectable
    ECC error on those in ``unhealthy``)."""
    capture = json.loads((Path(__file__).parents[1] / "data" / "h200" / "health" / "health-nvml.json").read_text())
    (gpu,) = capture["gpus"]
    gpus = []
    for index in range(count):
        one = copy.deepcopy(gpu)
        one["index"], one["pci_bus_id"] = index, f"0000:{index + 0x18:02x}:00"
        if index in unhealthy:
            one["readings"]["ecc_uncorrected_volatile"] = {"status": "ok", "value": 1}
        gpus.append(one)
    return ["--ms4fleet-- health", *json.dumps({**capture, "gpus": gpus}).splitlines()]


def test_the_health_reading_rides_in_the_checks_round_trip() -> None:
    """One read per run on a converged host, health included; a GPU gone bad since makes the host unconverged
    with the plan that leaves it out; a host converged without that GPU stays on the quick check."""
    base = desired()
    config = base.config
    reads: list[str] = []

    def plan_for(excluded: tuple[Exclusion, ...]) -> ServingPlan:
        return plan_host(config, excluded=excluded)

    def host(units_for: tuple[int, ...], unhealthy: tuple[int, ...] = ()) -> Callable[[str], dict[str, list[str]]]:
        """A host whose units are the plan without GPUs ``units_for`` (all active), GPUs ``unhealthy`` bad."""
        want = Desired(config, base.provision, plan_for(tuple(Exclusion(g, "") for g in units_for)), base.weights)

        def read(script: str) -> dict[str, list[str]]:
            reads.append(script)
            os_part = ["--ms4fleet-- os", "ID=debian", 'VERSION_ID="12"'] if "cat /etc/os-release" in script else []
            answer = converged_output(want) if "dpkg-query" in script else quick_answer(want)
            health = health_answer(8, unhealthy) if "--ms4fleet-- health" in script else []
            return sections([*os_part, *answer, *health])

        return read

    name = "health/gpu-1"
    verdicts.forget(name)
    first = check(name, config, plan_for, base.weights, host(()))
    assert first.converged and first.excluded == () and first.health_error == "" and len(reads) == 1
    assert "--ms4fleet-- health" in reads[0] and "python3 -c" in reads[0]
    quick = check(name, config, plan_for, base.weights, host(()))
    assert (quick.converged, quick.quick, len(reads)) == (True, True, 2)
    assert "--ms4fleet-- health" in reads[1]
    # GPU 1 went bad while replica 0 (GPUs 0 and 1) still runs: the quick read saw it; the full check runs
    # with the plan that leaves GPU 1 out (in one more read) and finds the old replica's unit stale.
    sick = check(name, config, plan_for, base.weights, host((), unhealthy=(1,)))
    assert not sick.converged and not sick.quick and [e.gpu for e in sick.excluded] == [1]
    assert "ECC" in sick.excluded[0].reason
    assert any("stale unit ms4fleet-vllm-0.service" in d for d in sick.differences), sick.differences
    assert len(reads) == 4 and "--ms4fleet-- health" not in reads[3]
    assert [r.gpus for r in plan_for(sick.excluded).replicas] == [(2, 3), (4, 5), (6, 7)]
    # Converged without GPU 1: the verdict keeps the exclusion, so the next run is one quick read again.
    settled = check(name, config, plan_for, base.weights, host((1,), unhealthy=(1,)))
    assert settled.converged and [e.gpu for e in settled.excluded] == [1]
    stored = verdicts.load(name)
    assert stored is not None and [e.gpu for e in stored.excluded] == [1]
    before = len(reads)
    again = check(name, config, plan_for, base.weights, host((1,), unhealthy=(1,)))
    assert (again.converged, again.quick, len(reads) - before) == (True, True, 1)
    # Healed: replica 0 belongs to the plan again, so the host is not converged until it runs.
    healed = check(name, config, plan_for, base.weights, host((1,)))
    assert not healed.converged and healed.excluded == ()


def test_the_verified_record_is_written_as_given(tmp_path: Path) -> None:
    record = verified_record("mistral", ["models", "chat"], [{"replica": 0, "port": 8000, "ok": True, "failed": []}])
    assert json.loads(record) == {
        "model": "mistral",
        "checks": ["chat", "models"],
        "replicas": [{"replica": 0, "port": 8000, "ok": True, "failed": []}],
    }
    target = tmp_path / "lib" / "verified.json"
    command = (
        record_command(record)
        .replace(VERIFIED_FILE, str(target))
        .replace(os.path.dirname(VERIFIED_FILE), str(target.parent))
    )
    subprocess.run(["sh", "-c", command], check=True)
    assert target.read_text() == record
    assert target.stat().st_mode & 0o777 == 0o644


H200_PROBE = Path(__file__).parents[1] / "data" / "h200" / "2026-12-04-brownfield" / "probe.json"


def test_a_host_whose_driver_is_adopted_converges_without_a_driver_package() -> None:
    # The full check's first read carries the probe (the real H200's: its driver is the VM image's): the plan it
    # judges the host by adopts that driver, so a host without ms4fleet's driver package is converged.
    config = HostConfig.from_host_data("gpu-1", {**HOST_DATA, "ms4fleet_gpu": {"kind": "h200-sxm", "count": 1}})
    probe = H200_PROBE.read_text()
    stack = stack_for(config, parse_probe(probe))
    assert stack is not None and stack.driver.action == "adopt"
    os_text = 'ID=ubuntu\nVERSION_ID="24.04"\n'
    want = Desired(
        config, provision_plan(config, OsRelease.parse(os_text), stack), plan_host(config), request_for_host(config)
    )
    assert want.provision.driver is None
    host = ["--ms4fleet-- os", *os_text.splitlines(), *converged_output(want)]

    def run(answer: list[str]) -> Any:
        verdicts.forget("gpu-1")
        try:
            return check("gpu-1", config, lambda excluded: plan_host(config), want.weights, lambda _: sections(answer))
        finally:
            verdicts.forget("gpu-1")

    found = run([*host, "--ms4fleet-- probe", *probe.splitlines()])
    assert found.converged, found.differences
    assert found.stack == stack
    # The same host answering no probe is judged by the plan made without one: its driver package is missing.
    found = run(host)
    assert found.stack is None and "package nvidia-driver-580-open missing" in found.differences


def test_a_held_driver_off_its_pin_is_not_converged() -> None:
    want = desired()
    found = _drift(
        want,
        "dpkg",
        lambda rows: [r.replace("580.95.05-1", "580.82.07-1") if r.startswith("nvidia-") else r for r in rows],
    )
    assert "package nvidia-driver-580-open at 580.82.07-1, not the pinned version" in found, found
    assert "package nvidia-fabricmanager at 580.82.07-1, not the pinned version" in found, found
    # The rest of the host (CUDA, Docker, the toolkit) is not what the driver's pin names.
    assert [line for line in found if line.startswith("package ")] == [
        "package nvidia-driver-580-open at 580.82.07-1, not the pinned version",
        "package nvidia-fabricmanager at 580.82.07-1, not the pinned version",
    ]
