"""The host-side probe run as engines run it (``python3 probe.py``, a separate process) on a host whose
``nvidia-smi`` replays the real H200 captures, and its parsers for cgroups, lspci and the driver file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ms4fleet.hostside import probe as hostprobe
from ms4fleet.probe import parse_probe, probe_script

RUN = Path(__file__).resolve().parents[1] / "data" / "h200" / "2026-11-29"
# Interpreters to prove the probe on: this one, plus Python 3.8 (Ubuntu 20.04's) where it is installed.
PYTHON38 = sorted(
    str(p) for p in [Path("/usr/bin/python3.8"), *Path("/root/.pyenv/versions").glob("3.8*/bin/python3.8")]
)
PYTHONS = [sys.executable, *[p for p in PYTHON38 if Path(p).is_file()][:1]]

FAKE_SMI = """#!/bin/sh
# Replays real nvidia-smi output captured on an H200 ($CAPTURE_DIR, phase $PHASE).
case "$1" in
  --query-gpu=*)
    if [ -n "$REJECT_FIELD" ]; then
      if echo "$1" | grep -q "$REJECT_FIELD"; then
        echo "Field \\"$REJECT_FIELD\\" is not a valid field to query."; exit 2
      fi
      cat "$REDUCED_CSV"; exit 0
    fi
    cat "$CAPTURE_DIR/query-gpu-$PHASE.csv" ;;
  --query-compute-apps=*)
    [ -n "$FAIL_APPS" ] && { echo "Failed to query compute applications"; exit 15; }
    cat "$CAPTURE_DIR/query-apps-$PHASE.csv" 2>/dev/null ;;
  "") cat "$CAPTURE_DIR/nvidia-smi-$PHASE.txt" ;;
  *) echo "unexpected arguments: $*" >&2; exit 9 ;;
esac
"""

FAKE_LSPCI = """#!/bin/sh
# Real `lspci -Dn -d 10de:` lines of an HGX H100 board: 8 GPUs (class 0302) and 4 NVSwitches (class 0680).
[ "$1 $2 $3" = "-Dn -d 10de:" ] || exit 9
cat <<'OUT'
0000:18:00.0 0302: 10de:2330 (rev a1)
0000:2a:00.0 0302: 10de:2330 (rev a1)
0000:3a:00.0 0302: 10de:2330 (rev a1)
0000:5d:00.0 0302: 10de:2330 (rev a1)
0000:9a:00.0 0302: 10de:2330 (rev a1)
0000:ab:00.0 0302: 10de:2330 (rev a1)
0000:ba:00.0 0302: 10de:2330 (rev a1)
0000:db:00.0 0302: 10de:2330 (rev a1)
0000:05:00.0 0680: 10de:22a3 (rev a1)
0000:06:00.0 0680: 10de:22a3 (rev a1)
0000:07:00.0 0680: 10de:22a3 (rev a1)
0000:08:00.0 0680: 10de:22a3 (rev a1)
OUT
"""


def fake_bin(tmp_path: Path, **scripts: str) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, text in scripts.items():
        path = bindir / name.replace("_", "-")
        path.write_text(text)
        path.chmod(0o755)
    return bindir


def run_probe(python: str, bindir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # PATH holds only the fakes and the basics: no real nvidia-smi, no pynvml for other interpreters.
    environment = {"PATH": f"{bindir}:/usr/bin:/bin", "CAPTURE_DIR": str(RUN), **env}
    return subprocess.run(
        [python, "-S" if python != sys.executable else "-I", str(probe_script()), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("phase", ["idle", "cotenant"])
def test_nvidia_smi_path_end_to_end_matches_the_real_run(tmp_path: Path, python: str, phase: str) -> None:
    bindir = fake_bin(tmp_path, nvidia_smi=FAKE_SMI)
    done = run_probe(python, bindir, "--source", "nvidia-smi", PHASE=phase)
    assert done.returncode == 0, done.stderr
    replayed = parse_probe(done.stdout, host="fake")
    real = parse_probe((RUN / f"probe-nvidia-smi-{phase}.json").read_text(encoding="utf-8"))
    assert replayed.gpus == real.gpus
    assert replayed.driver.cuda_driver_version == "13.0"
    assert [(p.pid, p.used_bytes, p.name) for p in replayed.processes] == [
        (p.pid, p.used_bytes, p.name) for p in real.processes
    ]


def test_older_driver_without_compute_cap_is_asked_again(tmp_path: Path) -> None:
    # What an older driver answers once compute_cap is left out: the real row without that column.
    fields = list(hostprobe.QUERY_GPU_FIELDS)
    row = (RUN / "query-gpu-idle.csv").read_text(encoding="utf-8").strip().split(", ")
    del row[fields.index("compute_cap")]
    reduced = tmp_path / "reduced.csv"
    reduced.write_text(", ".join(row) + "\n")
    bindir = fake_bin(tmp_path, nvidia_smi=FAKE_SMI)
    done = run_probe(
        sys.executable,
        bindir,
        "--source",
        "nvidia-smi",
        PHASE="idle",
        REJECT_FIELD="compute_cap",
        REDUCED_CSV=str(reduced),
    )
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["source"] == "nvidia-smi"
    gpu = report["gpus"][0]
    assert gpu["compute_capability"] is None
    assert (gpu["mig_mode"], gpu["ecc_enabled"], gpu["persistence_mode"]) == ("disabled", True, True)
    assert gpu["memory_free_bytes"] == 143156 * hostprobe.MIB


def test_process_list_falls_back_to_the_table(tmp_path: Path) -> None:
    bindir = fake_bin(tmp_path, nvidia_smi=FAKE_SMI)
    done = run_probe(sys.executable, bindir, "--source", "nvidia-smi", PHASE="cotenant", FAIL_APPS="1")
    report = parse_probe(done.stdout)
    (proc,) = report.processes
    # The table truncates the co-tenant's memory to "10301...": known process, unknown amount.
    assert (proc.pid, proc.gpu_index, proc.name, proc.used_bytes) == (471, 0, "python3", None)
    assert proc.gpu_uuid == report.gpus[0].uuid
    assert any("query-compute-apps" in error for error in report.errors)


def test_no_driver_falls_back_to_pci_ids_and_sees_nvswitches(tmp_path: Path) -> None:
    bindir = fake_bin(tmp_path, lspci=FAKE_LSPCI)
    done = run_probe(sys.executable, bindir)
    report = parse_probe(done.stdout)
    assert report.source == "pci"
    assert [gpu.pci_device_id for gpu in report.gpus] == ["0x2330"] * 8
    assert report.gpu_kind(report.gpus[0]).id == "h100-sxm"  # type: ignore[union-attr]
    assert (report.nvswitch.present, report.nvswitch.count) == (True, 4)
    assert report.nvswitch.evidence == "lspci bridge class 0680"


def test_forced_source_that_is_missing_exits_1(tmp_path: Path) -> None:
    done = run_probe(sys.executable, fake_bin(tmp_path), "--source", "nvidia-smi")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["source"] == "none"
    assert any("nvidia-smi not found" in error for error in report["errors"])


@pytest.mark.parametrize(
    ("cgroup", "unit", "container"),
    [
        # cgroup v2, a native service
        ("0::/system.slice/ms4fleet-vllm@0.service\n", "ms4fleet-vllm@0.service", None),
        # cgroup v1, Docker with the cgroupfs driver (the sim hosts)
        ("12:memory:/docker/" + "a" * 64 + "\n11:pids:/docker/" + "a" * 64 + "\n", None, "a" * 64),
        # cgroup v2, Docker with the systemd driver
        ("0::/system.slice/docker-" + "b" * 64 + ".scope\n", None, "b" * 64),
        # containerd (Kubernetes)
        ("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + "c" * 64 + ".scope\n", None, "c" * 64),
        # a login session: neither
        ("0::/user.slice/user-0.slice/session-3.scope\n", None, None),
    ],
)
def test_cgroup_owner(cgroup: str, unit: str | None, container: str | None) -> None:
    assert hostprobe.parse_cgroup(cgroup) == {"systemd_unit": unit, "container_id": container}


def test_process_owner_reads_proc(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text("0::/system.slice/ms4fleet-vllm@1.service\n")
    (tmp_path / "4242" / "comm").write_text("VLLM::EngineCore\n")
    assert hostprobe.process_owner(4242, proc_root=str(tmp_path)) == {
        "systemd_unit": "ms4fleet-vllm@1.service",
        "container_id": None,
        "comm": "VLLM::EngineCore",
    }


def test_driver_version_file() -> None:
    real = (RUN / "proc-driver-nvidia-version.txt").read_text(encoding="utf-8")
    assert hostprobe.parse_driver_version_file(real) == {"version": "580.159.04", "flavor": "open"}
    proprietary = (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 18:56:32 UTC 2023\n"
        "GCC version:  gcc version 11.4.0 (Ubuntu 11.4.0-1ubuntu1~22.04)\n"
    )
    assert hostprobe.parse_driver_version_file(proprietary) == {"version": "535.129.03", "flavor": "proprietary"}


def test_nvswitch_devices_under_proc(tmp_path: Path) -> None:
    devices = tmp_path / "driver" / "nvidia-nvswitch" / "devices"
    devices.mkdir(parents=True)
    for address in ("0000:05:00.0", "0000:06:00.0"):
        (devices / address).write_text("")
    found = hostprobe.collect_nvswitch(None, proc_root=str(tmp_path))
    assert found == {"present": True, "count": 2, "evidence": "/proc/driver/nvidia-nvswitch/devices"}


@pytest.mark.parametrize(
    ("raw", "bus", "device"),
    [("00000000:19:00.0", "0000:19:00.0", None), ("0000:DB:00.0", "0000:db:00.0", None)],
)
def test_bus_id_normalisation(raw: str, bus: str, device: None) -> None:
    assert hostprobe.normalize_bus_id(raw) == bus


@pytest.mark.parametrize(("raw", "device"), [("0x233510DE", "0x2335"), ("2901", "0x2901"), (0x233010DE, "0x2330")])
def test_device_id_normalisation(raw: str | int, device: str) -> None:
    assert hostprobe.normalize_device_id(raw) == device


def test_query_csv_missing_markers() -> None:
    rows = hostprobe.parse_query_csv("0, [N/A], ERR!, [Not Supported], 42\n", ["a", "b", "c", "d", "e"])
    assert rows == [{"a": "0", "b": None, "c": None, "d": None, "e": "42"}]


def test_probe_file_is_python38_clean() -> None:
    """No syntax newer than 3.8 in the shipped file (hosts run Ubuntu 20.04's python3)."""
    import ast

    tree = ast.parse(probe_script().read_text(encoding="utf-8"), feature_version=(3, 8))
    assert tree.body
    assert os.access(probe_script(), os.R_OK)
