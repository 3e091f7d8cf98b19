"""The sim's parts without Docker: GPU specs and profiles, the simulated NVIDIA tools against a fake host
state, package metadata, and the inventories read back through the core loader."""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.catalog import MIB, gpu_kinds
from ms4fleet.health import judge_gpu
from ms4fleet.hostside import health as reader
from ms4fleet.inventory import load_inventory
from ms4fleet_sim import inventories, packages
from ms4fleet_sim.fleet import Fleet, FleetRecord, HostRecord
from ms4fleet_sim.nvsim import ctk, hook, lspci, runc_shim, runtime, smi, state
from ms4fleet_sim.profiles import DRIVER_RESERVED_BYTES, GpuSpec, assign_specs, parse_gpu_spec, render_profile


@pytest.mark.parametrize(
    ("text", "kind", "count"),
    [("h200x8", "h200-sxm", 8), ("H100-NVL:2", "h100-nvl", 2), ("b200", "b200", 8), ("h100pcie*1", "h100-pcie", 1)],
)
def test_gpu_specs_accept_short_and_catalog_forms(text: str, kind: str, count: int) -> None:
    assert parse_gpu_spec(text) == GpuSpec(kind, count)


@pytest.mark.parametrize(
    ("text", "message"),
    [("h300x8", "unknown GPU kind 'h300'; known kinds: b200, h100-nvl"), ("h200x9", "GPU count must be 1..8")],
)
def test_bad_gpu_specs_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_gpu_spec(text)


def test_specs_are_dealt_round_robin_over_hosts() -> None:
    a, b = GpuSpec("h200-sxm", 8), GpuSpec("h100-sxm", 8)
    assert assign_specs([a, b], 3) == [a, b, a]
    with pytest.raises(ValueError, match="given 2 times for 1 host"):
        assign_specs([a, b], 1)


def test_profiles_follow_the_catalog_and_board_layout() -> None:
    hgx = render_profile("h", GpuSpec("h200-sxm", 8))
    assert hgx["memory_total_bytes"] == gpu_kinds()["h200-sxm"].memory_mib * MIB
    assert (hgx["nvswitch"], len(hgx["nvswitches"]), hgx["pci_device_id"]) == (True, 4, "0x2335")
    pcie = render_profile("h", GpuSpec("h100-nvl", 2))
    assert (pcie["nvswitch"], pcie["nvswitches"], len(pcie["gpus"])) == (False, [], 2)
    # Blackwell HGX NVSwitches are not PCI devices on the host.
    b200 = render_profile("h", GpuSpec("b200", 8))
    assert (b200["nvswitch"], b200["nvlink5"], b200["nvswitches"]) == (True, True, [])
    assert render_profile("h", GpuSpec("b200", 8)) == b200  # deterministic UUIDs and serials
    assert render_profile("other", GpuSpec("b200", 8))["gpus"][0]["uuid"] != b200["gpus"][0]["uuid"]


@pytest.fixture
def fake_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A sim host's state files under tmp_path: an 8 x H200 profile and a loaded 580.95.05 module."""
    prof = render_profile("fake", GpuSpec("h200-sxm", 8))
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    (etc / "profile.json").write_text(json.dumps(prof))
    module = {"version": "580.95.05", "flavor": "open"}
    run.mkdir()
    (run / "module.json").write_text(json.dumps(module))
    (tmp_path / "driver.json").write_text(json.dumps({"version": "580.95.05", "cuda_version": "13.0"}))
    monkeypatch.setattr(state, "PROFILE", etc / "profile.json")
    monkeypatch.setattr(state, "FAULTS", etc / "faults.json")
    monkeypatch.setattr(state, "RUN_DIR", run)
    monkeypatch.setattr(state, "MODULE_LOADED", run / "module.json")
    monkeypatch.setattr(state, "PROCS_DIR", run / "procs")
    monkeypatch.setattr(smi, "DRIVER_INFO", tmp_path / "driver.json")
    monkeypatch.setattr(smi, "PERSISTENCE", run / "persistence.json")
    return prof


def _bundle(tmp_path: Path, env: list[str], args: list[str]) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "run").mkdir(parents=True)
    config = {"root": {"path": "rootfs"}, "process": {"env": env, "args": args}}
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def test_hook_writes_visible_gpus_and_registers_a_vllm_server(tmp_path: Path, fake_host: dict[str, Any]) -> None:
    state.FAULTS.write_text('{"health_503": true}')
    args = ["vllm", "serve", "/models", "--gpu-memory-utilization", "0.5"]
    bundle = _bundle(tmp_path, ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=1,2"], args)
    assert hook.prestart({"id": "c1", "pid": os.getpid(), "bundle": str(bundle)}) == 0
    views = json.loads((bundle / "rootfs/run/nvidia-sim/gpus.json").read_text())
    total = fake_host["memory_total_bytes"]
    assert [(v["index"], v["host_index"]) for v in views] == [(0, 1), (1, 2)]
    assert views[0]["memory_free_bytes"] == total - DRIVER_RESERVED_BYTES
    assert json.loads((bundle / "rootfs/run/nvidia-sim/faults.json").read_text()) == {"health_503": True}
    entry = json.loads((state.PROCS_DIR / "c1.json").read_text())
    assert entry["gpu_memory_bytes"] == {"1": int(0.5 * total), "2": int(0.5 * total)}
    # A second container on GPU 2 sees the first one's memory as used.
    other = _bundle(tmp_path / "second", ["NVIDIA_VISIBLE_DEVICES=2"], ["vllm", "serve", "/m"])
    assert hook.prestart({"id": "c2", "pid": os.getpid(), "bundle": str(other)}) == 0
    seen = json.loads((other / "rootfs/run/nvidia-sim/gpus.json").read_text())
    assert seen[0]["memory_free_bytes"] == total - DRIVER_RESERVED_BYTES - int(0.5 * total)


def test_hook_ignores_containers_without_gpus_and_fails_without_a_driver(
    tmp_path: Path, fake_host: dict[str, Any]
) -> None:
    plain = _bundle(tmp_path, ["PATH=/bin"], ["sh"])
    assert hook.prestart({"id": "p", "pid": 1, "bundle": str(plain)}) == 0
    assert not (plain / "rootfs/run/nvidia-sim").exists()
    gpu = _bundle(tmp_path / "g", ["NVIDIA_VISIBLE_DEVICES=all"], ["sh"])
    assert hook.prestart({"id": "g", "pid": 1, "bundle": str(gpu)}) == 0
    assert not (state.PROCS_DIR / "g.json").exists()  # only a vLLM server holds memory
    unknown = _bundle(tmp_path / "u", ["NVIDIA_VISIBLE_DEVICES=9"], ["sh"])
    assert hook.prestart({"id": "u", "pid": 1, "bundle": str(unknown)}) == 1
    state.MODULE_LOADED.unlink()
    assert hook.prestart({"id": "g2", "pid": 1, "bundle": str(gpu)}) == 1


def test_nvidia_smi_counts_live_processes_and_drops_dead_ones(fake_host: dict[str, Any]) -> None:
    state.register("live", os.getpid(), "vllm", {0: 10 * MIB * 1024})
    dead = subprocess.Popen(["true"])
    dead.wait()
    state.register("dead", dead.pid, "vllm", {1: 5 * MIB})
    out = smi.run(["--query-gpu=index,memory.used", "--format=csv,noheader,nounits"])
    assert out.splitlines()[:3] == ["0, 10240", "1, 0", "2, 0"]
    assert not (state.PROCS_DIR / "dead.json").exists()
    apps = smi.run(["--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader,nounits"])
    assert apps == f"{os.getpid()}, vllm, 10240\n"


def test_nvidia_smi_fails_like_the_real_one_without_a_matching_module(fake_host: dict[str, Any]) -> None:
    state.MODULE_LOADED.write_text(json.dumps({"version": "570.195.03", "flavor": "open"}))
    with pytest.raises(smi.SmiError) as mismatch:
        smi.run(["-L"])
    assert (mismatch.value.code, str(mismatch.value).splitlines()[0]) == (
        18,
        "Failed to initialize NVML: Driver/library version mismatch",
    )
    state.MODULE_LOADED.unlink()
    with pytest.raises(smi.SmiError) as absent:
        smi.run(["-L"])
    assert absent.value.code == 9


def test_lspci_renders_pciutils_formats(fake_host: dict[str, Any]) -> None:
    devices = lspci.simulated_devices()
    gpu, switch = devices[0], devices[-1]
    opts = lspci.parse(["-Dn", "-d", "10de:"])
    assert lspci.render(gpu, opts, driver_loaded=False) == ["0000:18:00.0 0302: 10de:2335 (rev a1)"]
    nn = lspci.render(switch, lspci.parse(["-nn"]), driver_loaded=False)
    assert nn == ["08:00.0 Bridge [0680]: NVIDIA Corporation GH100 [H100 NVSwitch] [10de:22a3] (rev a1)"]
    assert not lspci._matches(gpu, lspci.parse(["-d", "8086:"]))
    assert lspci._matches(gpu, lspci.parse(["-s", "18:00.0"]))
    assert not lspci._matches(gpu, lspci.parse(["-d", "10de::0680"]))


def test_ctk_configure_merges_daemon_json_like_the_real_tool(tmp_path: Path) -> None:
    daemon = tmp_path / "daemon.json"
    daemon.write_text(json.dumps({"log-driver": "journald", "runtimes": {"crun": {"path": "/usr/bin/crun"}}}))
    assert ctk.main(["runtime", "configure", "--runtime=docker", f"--config={daemon}", "--set-as-default"]) == 0
    written = daemon.read_text()
    assert json.loads(written) == {
        "default-runtime": "nvidia",
        "log-driver": "journald",
        "runtimes": {"crun": {"path": "/usr/bin/crun"}, "nvidia": {"args": [], "path": "nvidia-container-runtime"}},
    }
    assert written.startswith('{\n    "default-runtime": "nvidia",\n    "log-driver"')
    assert ctk.main(["runtime", "configure", "--runtime=docker", f"--config={daemon}", "--set-as-default"]) == 0
    assert daemon.read_text() == written
    fresh = tmp_path / "new" / "daemon.json"
    assert ctk.main(["runtime", "configure", f"--config={fresh}"]) == 0
    assert "default-runtime" not in json.loads(fresh.read_text())


def test_runtime_adds_the_hook_once_and_only_for_gpu_containers() -> None:
    config: dict[str, Any] = {"process": {"env": ["NVIDIA_VISIBLE_DEVICES=0"]}}
    assert runtime.add_hook(config)
    assert not runtime.add_hook(config)
    assert config["hooks"]["prestart"] == [
        {"path": runtime.HOOK, "args": ["nvidia-container-runtime-hook", "prestart"]}
    ]
    assert not runtime.add_hook({"process": {"env": ["PATH=/bin"]}})
    assert runtime.bundle_of(["--root", "/r", "create", "--bundle", "/b", "id"]) == Path("/b")
    assert runtime.bundle_of(["start", "id"]) is None


def test_runc_shim_lowers_only_limits_above_the_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limits = [
        {"type": "RLIMIT_MEMLOCK", "hard": 2**64 - 1, "soft": 2**64 - 1},
        {"type": "RLIMIT_NOFILE", "hard": 8, "soft": 8},
    ]
    changed = runc_shim.clamp(limits)
    if hard == resource.RLIM_INFINITY:
        assert not changed
    else:
        assert changed and limits[0] == {"type": "RLIMIT_MEMLOCK", "hard": hard, "soft": hard}
    assert limits[1] == {"type": "RLIMIT_NOFILE", "hard": 8, "soft": 8}


def test_driver_package_metadata_and_side_effects(tmp_path: Path) -> None:
    deb = packages.driver("580", "open").build(tmp_path)
    fields = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "Package: nvidia-driver-580-open\nVersion: 580.95.05-1\n" in fields
    assert "Conflicts: nvidia-driver-binary" in fields
    postinst = subprocess.run(["dpkg-deb", "-I", str(deb), "postinst"], capture_output=True, text=True, check=True)
    assert "touch /var/run/reboot-required" in postinst.stdout
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "./usr/bin/nvidia-smi" in listing and "./lib/systemd/system/nvidia-persistenced.service" in listing
    names = {(p.name, p.version) for p in packages.all_packages()}
    assert {("nvidia-fabricmanager-580", "580.95.05-1"), ("nvidia-fabricmanager-580", "580.82.07-1")} <= names
    # The older 580 build an upgrade test holds a host at, driver and fabric manager.
    assert {("nvidia-driver-580-open", "580.82.07-1"), ("nvidia-fabricmanager", "580.82.07-1")} <= names
    assert {("cuda-toolkit-12-8", "12.8.93-1"), ("nvidia-container-toolkit", "1.18.0-1")} <= names


def test_inventories_round_trip_through_the_core_loader(tmp_path: Path) -> None:
    hosts = [
        HostRecord("gpu-1", "c1", 2201, "h200-sxm", 8, True),
        HostRecord("gpu-2", "c2", 2202, "h100-nvl", 2, False),
    ]
    record = FleetRecord(
        "gpu", "n", "r", "ms4fleet", "/k/id", "/k/known", "img", "/repo", hosts,
        mirror_url="http://127.0.0.1:2203", registry="127.0.0.1:2204", staging_dir="/k/staging",
    )  # fmt: skip
    fleet = Fleet(root=tmp_path, name="gpu")
    py_path, yml_path = inventories.write(fleet, record)
    assert (py_path, yml_path) == (tmp_path / "inventory/sim.py", tmp_path / "inventory/sim.yml")
    for path in (py_path, yml_path):
        specs = {spec.name: spec for spec in load_inventory(path)}
        assert specs["gpu-2"].address == ("127.0.0.1", 2202)
        assert (specs["gpu-2"].config.gpu.kind, specs["gpu-2"].config.gpu.count) == ("h100-nvl", 2)
        assert specs["gpu-1"].config.provision.nvidia_apt_repo is not None
        assert specs["gpu-1"].config.runtime.image == inventories.STANDIN_IMAGE
        runtime = specs["gpu-1"].config.runtime
        assert (runtime.registry_url, runtime.registry_allow_insecure) == ("http://127.0.0.1:2204", True)
        # Everything the documented commands need is in the inventory: weights, registry, staging.
        weights = specs["gpu-1"].config.weights
        assert weights is not None and (weights.source, weights.mirror_url) == ("mirror", "http://127.0.0.1:2203")
        assert specs["gpu-1"].config.provision.docker_daemon_options == {
            "registry-mirrors": ["http://ms4fleet-sim-registry:5000"]
        }
    assert "'weights_staging_dir': '/k/staging'" in py_path.read_text()
    assert "model_weights_staging_dir: /k/staging" in yml_path.read_text()
    other = Fleet(root=tmp_path, name="ci")
    assert inventories.paths(other)[0] == tmp_path / ".sim/ci/inventory.py"


def test_vllm_utilization_is_read_from_the_argv() -> None:
    assert state.gpu_memory_utilization(["vllm", "serve", "m", "--gpu-memory-utilization", "0.8"]) == 0.8
    assert state.gpu_memory_utilization(["--gpu-memory-utilization=0.7"]) == 0.7
    assert state.gpu_memory_utilization(["vllm", "serve", "m"]) == state.DEFAULT_GPU_MEMORY_UTILIZATION


def test_smi_main_prints_errors_on_stdout(fake_host: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr("sys.stdout", buffer)
    assert smi.main(["--query-gpu=bogus", "--format=csv"]) == 2
    assert buffer.getvalue() == 'Field "bogus" is not a valid field to query.\n'


def test_runc_shim_finds_the_specs_runc_applies() -> None:
    assert runc_shim.spec_files(["--root", "/r", "create", "--bundle", "/b", "id"]) == [Path("/b/config.json")]
    assert runc_shim.spec_files(["exec", "--process", "/tmp/p.json", "id"]) == [Path("/tmp/p.json")]
    assert runc_shim.spec_files(["start", "id"]) == []


def test_spec_labels_parse_back() -> None:
    spec = GpuSpec("h100-nvl", 2)
    assert parse_gpu_spec(spec.label()) == spec


def _health_of(host_faults: dict[str, Any]) -> Any:
    """The sim's nvidia-smi answers the health reader's own queries; the core judges them."""
    state.FAULTS.write_text(json.dumps(host_faults))
    query = smi.run(["--query-gpu=" + ",".join(reader.SMI_FIELDS), "--format=csv,noheader,nounits"])
    details = reader.parse_smi_details(smi.run(["-q"]))
    return [judge_gpu(gpu, [], []) for gpu in reader.parse_smi(query, details)]


@pytest.mark.parametrize(
    ("switch", "verdict", "reason"),
    [
        ({"ecc_uncorrected_volatile": 1}, "unhealthy", "uncorrectable ECC"),
        ({"ecc_uncorrected_aggregate": 4}, "degraded", "in its lifetime"),
        ({"ecc_mode": False}, "degraded", "ECC is off"),
        ({"row_remap_pending": True}, "unhealthy", "row remap is pending"),
        ({"row_remap_failure": True}, "unhealthy", "row remapping failed"),
        ({"banks_without_spare_rows": 3}, "degraded", "no spare rows"),
        ({"pcie_width": 8}, "degraded", "x8 of x16"),
        ({"pcie_gen": 3, "clocks_event_reasons": 0}, "degraded", "gen 3 of 5"),
        ({"clocks_event_reasons": 0x40}, "unhealthy", "hw_thermal_slowdown"),
        ({"clocks_event_reasons": 0x20}, "degraded", "sw_thermal_slowdown"),
        ({"temperature_c": 90}, "degraded", "slowdown limit"),
        ({"temperature_c": 96}, "unhealthy", "shutdown limit"),
        ({"mig": True}, "unhealthy", "MIG is on"),
        ({"fabric_state": "In Progress"}, "unhealthy", "fabric state is in_progress"),
    ],
)
def test_every_sim_gpu_fault_switch_excludes_or_warns_with_its_reason(
    fake_host: dict[str, Any], switch: dict[str, Any], verdict: str, reason: str
) -> None:
    (smi.PERSISTENCE).parent.mkdir(parents=True, exist_ok=True)
    smi.PERSISTENCE.write_text('{"enabled": true}')
    healthy = _health_of({})
    assert [str(g.verdict) for g in healthy] == ["healthy"] * 8, [g.findings for g in healthy]
    gpus = _health_of({"gpu_health": {"3": switch}})
    assert [str(g.verdict) for g in gpus] == ["healthy"] * 3 + [verdict] + ["healthy"] * 4
    assert reason in gpus[3].summary, gpus[3].findings


def test_sim_gpu_health_refuses_an_unknown_switch(fake_host: dict[str, Any]) -> None:
    state.FAULTS.write_text(json.dumps({"gpu_health": {"0": {"ecc_erors": 1}}}))
    with pytest.raises(smi.SmiError, match="unknown gpu_health switch"):
        smi.run(["-q"])
