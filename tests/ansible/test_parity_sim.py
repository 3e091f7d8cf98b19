"""Engine parity on the simulated fleet: from the same config, one host converged by pyinfra (``deploy.py``)
and one by Ansible (``playbooks/site.yml``) end with identical managed files (path, owner, group, mode,
sha256), identical versions of the packages the core plans, and identical service states.

Both engines also run the core's GPU probe on both hosts, on the bare hosts and again once the driver is in:
the same report, from PCI ids before the driver and from nvidia-smi after it.

plan == apply: every file either engine wrote in ms4fleet's places on its host is one of that host's
``ms4fleet plan --json`` files (read through the engine's own inventory), byte for byte, owner and mode."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ms4fleet import paths
from ms4fleet.catalog import gpu_kinds
from ms4fleet.config import HostConfig
from ms4fleet.provision import DAEMON_JSON, KEYRING, OsRelease, provision_plan
from ms4fleet.serving import plan_host
from tests.ansible import simrun
from tests.pyinfra import simfleet

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "parity"
PYINFRA_HOST, ANSIBLE_HOST = f"{FLEET}-1", f"{FLEET}-2"
# ansible.builtin.apt installs python3-apt on first use; on Debian 12 it brings these along.
# The probes each engine ran, by moment ("before" the driver, "after" it), engine and host.
PROBES: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
APT_MODULE_NEEDS = {"python3-apt", "python-apt-common", "distro-info-data", "iso-codes", "lsb-release"}
# Where ms4fleet writes files on a host: anything found here must be a file of the host's plan.
MANAGED_PLACES = (
    "/etc/apt/sources.list.d/ms4fleet-*",
    "/etc/apt/preferences.d/ms4fleet-*",
    "/etc/apt/apt.conf.d/51ms4fleet-*",
    "/etc/modprobe.d/ms4fleet-*",
    "/etc/systemd/system/ms4fleet-*",
    "/etc/systemd/system/*.service.d/ms4fleet.conf",
    "/usr/local/lib/ms4fleet/*",
    "/etc/nginx/conf.d/ms4fleet-*",
    "/etc/docker/daemon.json",
)


def host_config(fleet: simfleet.Fleet, name: str) -> HostConfig:
    inventory = yaml.safe_load(fleet.inventory.with_suffix(".yml").read_text())["all"]["children"]["sim"]
    data = {**inventory["vars"], **inventory["hosts"][name]}
    return HostConfig.from_host_data(name, {k: v for k, v in data.items() if k.startswith("ms4fleet_")})


def state(fleet: simfleet.Fleet, name: str, config: HostConfig) -> dict[str, Any]:
    """What parity compares, read on the host through Docker (not through either engine)."""
    os_release = OsRelease.parse(fleet.sh(name, "cat /etc/os-release"))
    plan = provision_plan(config, os_release)
    units = [f"{paths.SYSTEMD_DIR}/{r.unit_name}" for r in plan_host(config).replicas]
    # The environment file exists only for a service with secrets; listing it checks that both agree.
    files = sorted({f.path for f in plan.files} | {DAEMON_JSON, KEYRING, paths.ENV_FILE, *units})
    script = " ; ".join(
        f"p={shlex.quote(p)}; if [ -e $p ]; then echo $p $(stat -c '%U %G %a' $p) $(sha256sum < $p | cut -c1-64);"
        " else echo $p missing; fi"
        for p in files
    )
    listed = {line.split()[0]: tuple(line.split()[1:]) for line in fleet.sh(name, script).splitlines()}
    packages = [name for group in plan.packages() for name in group.names]
    versions = fleet.sh(name, "dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n' " + " ".join(packages))
    services = [*plan.enabled_services, *(Path(u).name for u in units)]
    active = fleet.sh(name, f"systemctl is-active {' '.join(services)}", check=False).split()
    enabled = fleet.sh(name, f"systemctl is-enabled {' '.join(services)}", check=False).split()
    return {
        "files": listed,
        "packages": sorted(versions.splitlines()),
        "services": dict(zip(services, zip(active, enabled, strict=True), strict=True)),
        "all_packages": set(fleet.sh(name, "dpkg-query -W -f='${Package} ${Version}\\n'").splitlines()),
    }


def probe_by_pyinfra(fleet: simfleet.Fleet) -> dict[str, dict[str, Any]]:
    """``pyinfra INVENTORY fact ms4fleet_pyinfra.facts.Probe --json``: {host: probe report}."""
    argv = [str(simfleet.PYINFRA), "-y", "--sudo", str(fleet.inventory), "fact", "ms4fleet_pyinfra.facts.Probe"]
    done = subprocess.run([*argv, "--json"], cwd=simrun.ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (facts,) = json.loads(done.stdout).values()
    assert all(f["report"] for f in facts.values()), facts
    return {host: fact["report"] for host, fact in facts.items()}


def probe_by_ansible(fleet: simfleet.Fleet) -> dict[str, dict[str, Any]]:
    """``ansible INVENTORY -m ms4fleet.fleet.probe --become -o``: {host: probe report}."""
    inventory = str(fleet.inventory.with_suffix(".yml"))
    argv = [str(simrun.BIN / "ansible"), "-i", inventory, "all", "-m", "ms4fleet.fleet.probe", "--become", "-o"]
    done = subprocess.run(argv, cwd=simrun.ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = {}
    for line in done.stdout.splitlines():
        host, _, result = line.partition(" | SUCCESS => ")
        if result:
            out[host.strip()] = json.loads(result)["probe"]
    return out


def probe_both(fleet: simfleet.Fleet) -> dict[str, dict[str, dict[str, Any]]]:
    return {"pyinfra": probe_by_pyinfra(fleet), "ansible": probe_by_ansible(fleet)}


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[simfleet.Fleet]:
    fleet = simfleet.ensure_fleet(FLEET, 2)
    # The air-gapped path in both engines: the image travels as a `docker save` archive, not from a registry.
    archive = simfleet.ensure_image_archive()
    try:
        PROBES["before"] = probe_both(fleet)
        extra = tmp_path_factory.mktemp("ansible") / "extra-vars.yml"
        extra.write_text(yaml.safe_dump({"vllm_service_image_archive": str(archive)}))
        # Both engines at once, each on its own host.
        ansible = _start_ansible(fleet.inventory.with_suffix(".yml"), extra)
        pyinfra = simfleet.pyinfra(fleet, f"--limit={PYINFRA_HOST}", archive=archive)
        ansible_out, _ = ansible.communicate()
        assert pyinfra.rc == 0, pyinfra.output[-3000:]
        assert ansible.returncode == 0, ansible_out[-3000:]
        PROBES["after"] = probe_both(fleet)
        yield fleet
    finally:
        fleet.down()


def _start_ansible(inventory: Path, extra: Path) -> subprocess.Popen[str]:
    argv = [
        str(simrun.BIN / "ansible-playbook"), "-i", str(inventory), "--limit", ANSIBLE_HOST, "-e", f"@{extra}",
        str(simrun.ROOT / "playbooks" / "site.yml"),
    ]  # fmt: skip
    return subprocess.Popen(argv, cwd=simrun.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_both_engines_leave_the_same_host(converged: simfleet.Fleet) -> None:
    fleet = converged
    by_pyinfra = state(fleet, PYINFRA_HOST, host_config(fleet, PYINFRA_HOST))
    by_ansible = state(fleet, ANSIBLE_HOST, host_config(fleet, ANSIBLE_HOST))
    assert by_ansible["files"] == by_pyinfra["files"]
    assert by_ansible["packages"] == by_pyinfra["packages"]
    assert by_ansible["services"] == by_pyinfra["services"]
    assert all(s == ("active", "enabled") for s in by_ansible["services"].values()), by_ansible["services"]
    # Beyond the plan, only what Ansible's apt module itself needs on the host: python3-apt and its dependencies.
    extra = {"ansible": by_ansible["all_packages"] - by_pyinfra["all_packages"]}
    extra["pyinfra"] = by_pyinfra["all_packages"] - by_ansible["all_packages"]
    print(json.dumps({k: sorted(v) for k, v in extra.items()}, indent=1))
    assert {line.split()[0] for line in extra["ansible"]} <= APT_MODULE_NEEDS, extra
    assert not extra["pyinfra"], extra


def plan_json(inventory: Path, host: str) -> dict[str, Any]:
    """That host's ``HostPlan`` as ``ms4fleet plan --json`` prints it for this inventory (bytes put back in)."""
    argv = [str(simrun.BIN / "ms4fleet"), "plan", str(inventory), "--json", "--limit", host]
    done = subprocess.run(argv, cwd=simrun.ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    (entry,) = printed["hosts"]
    plan = dict(entry["plan"])
    for f in [*plan["files"], *plan["merged_files"]]:
        f["content"] = printed["contents"][f["sha256"]]
    return plan


def on_host(fleet: simfleet.Fleet, name: str, paths_: list[str]) -> dict[str, tuple[str, str, int, str]]:
    """path -> (owner, group, mode, sha256 of the bytes) as the host has it (through Docker, not an engine)."""
    script = " ; ".join(
        f"p={shlex.quote(p)}; echo $p $(stat -c '%U %G %a' $p) $(sha256sum < $p | cut -c1-64)" for p in paths_
    )
    out = {}
    for line in fleet.sh(name, script).splitlines():
        path, owner, group, mode, digest = line.split()
        out[path] = (owner, group, int(mode, 8), digest)
    return out


@pytest.mark.parametrize("host", [PYINFRA_HOST, ANSIBLE_HOST])
def test_every_file_each_engine_wrote_is_the_plans(converged: simfleet.Fleet, host: str) -> None:
    fleet = converged
    # Each engine's host, planned through that engine's inventory and loader.
    inventory = fleet.inventory if host == PYINFRA_HOST else fleet.inventory.with_suffix(".yml")
    plan = plan_json(inventory, host)
    # Planned without a probe: the OS the plan states is the one the host runs (and the engine applied).
    os_release = OsRelease.parse(fleet.sh(host, "cat /etc/os-release"))
    assert {k: v for k, v in plan["os"].items() if k != "source"} == os_release.to_json(), plan["os"]
    # daemon.json is merged into what the host had: the sim's hosts had none, so it is the plan's bytes.
    planned = {f["path"]: f for f in [*plan["files"], *plan["merged_files"]]}
    found = fleet.sh(host, f'for p in {" ".join(MANAGED_PLACES)}; do [ -f "$p" ] && echo "$p"; done; true').split()
    assert set(found) == set(planned), {"not planned": set(found) - set(planned), "missing": set(planned) - set(found)}
    wanted = {p: (f["owner"], f["group"], int(f["mode"], 8), f["sha256"]) for p, f in planned.items()}
    assert on_host(fleet, host, sorted(planned)) == wanted
    assert all(hashlib.sha256(f["content"].encode()).hexdigest() == f["sha256"] for f in planned.values())
    # Files whose bytes the plan does not hold: the downloaded apt key, and the secrets' environment file
    # (a reference: its owner and mode are planned, its bytes are secret).
    assert fleet.sh(host, f"test -s {shlex.quote(plan['apt']['keyring'])} && echo ok").strip() == "ok"
    env_file = plan["secrets"]["env_file"]
    if plan["secrets"]["needed"]:
        owner, group, mode, _ = on_host(fleet, host, [env_file["path"]])[env_file["path"]]
        assert (owner, group, mode) == (env_file["owner"], env_file["group"], int(env_file["mode"], 8))
    assert [u["name"] for u in plan["units"] if u["role"] == "replica"] == [
        Path(p).name for p, f in planned.items() if p.startswith(f"{paths.SYSTEMD_DIR}/") and f["kind"] == "unit"
    ]


def _stable(report: dict[str, Any]) -> dict[str, Any]:
    """What two probes of one host a few seconds apart must agree on (not time, memory use or processes)."""
    gpus = [
        {k: g[k] for k in ("index", "uuid", "name", "pci_bus_id", "pci_device_id", "memory_total_bytes")}
        for g in report["gpus"]
    ]
    return {"source": report["source"], "driver": report["driver"]["version"], "gpus": gpus, "pci": report["pci"]}


def test_both_engines_probe_the_bare_hosts_from_pci_ids(converged: simfleet.Fleet) -> None:
    h200 = gpu_kinds()["h200-sxm"]
    by_engine = PROBES["before"]
    for engine, reports in by_engine.items():
        assert sorted(reports) == [PYINFRA_HOST, ANSIBLE_HOST], engine
        for host, report in reports.items():
            assert report["source"] == "pci", (engine, host, report["errors"])
            assert report["driver"]["version"] is None and not report["driver"]["kernel_module"]["loaded"]
            assert [g["pci_device_id"] for g in report["gpus"]] == [h200.pci_device_ids[0]] * 8, (engine, host)
            assert report["nvswitch"]["present"], (engine, host)
    assert {h: _stable(r) for h, r in by_engine["pyinfra"].items()} == {
        h: _stable(r) for h, r in by_engine["ansible"].items()
    }


def test_both_engines_probe_the_driver_once_it_is_in(converged: simfleet.Fleet) -> None:
    fleet = converged
    by_engine = PROBES["after"]
    for host in (PYINFRA_HOST, ANSIBLE_HOST):
        installed = fleet.sh(host, "dpkg-query -W -f='${Version}' nvidia-driver-580-open").split("-")[0]
        for engine, reports in by_engine.items():
            report = reports[host]
            assert report["source"] == "nvml", (engine, host, report["errors"])  # the sim has nvidia-ml-py
            assert report["driver"]["version"] == installed, (engine, host)
            assert len(report["gpus"]) == 8 and all(g["uuid"] and g["memory_total_bytes"] for g in report["gpus"])
            # The same physical GPUs as the PCI probe found before the driver.
            before = PROBES["before"][engine][host]
            assert [g["pci_device_id"] for g in report["gpus"]] == [g["pci_device_id"] for g in before["gpus"]]
    assert {h: _stable(r) for h, r in by_engine["pyinfra"].items()} == {
        h: _stable(r) for h, r in by_engine["ansible"].items()
    }
