"""Brownfield sim hosts (``ms4fleet_sim.brownfield``): a runfile driver, DKMS with a pending kernel (with and
without its module), docker-ce preinstalled, Secure Boot on. The host's own probe, ``ms4fleet plan --probe``,
the pyinfra dry run and Ansible's check mode state the same decision for the NVIDIA stack and Docker (or the
same one-line refusal); the DKMS host boots its pending kernel with the driver loaded; a deploy that needs a
reboot into a kernel without the module refuses it, naming the kernel, while the replica keeps answering."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from ms4fleet.cli import main
from ms4fleet_sim import brownfield, dockercli, inventories
from ms4fleet_sim import fleet as simfleet
from ms4fleet_sim.profiles import assign_specs, parse_gpu_spec
from ms4fleet_sim.ssh import wait_until_ready
from tests.ansible import simrun
from tests.pyinfra import simfleet as pyfleet

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "brownfield"
PROBE = Path(__file__).parents[2] / "src" / "ms4fleet" / "hostside" / "probe.py"
# What the core decides for each profile with the sim inventory's defaults (driver 580.95.05, Docker runtime).
EXPECTED = {
    "runfile": {"driver": "adopt", "docker": "install", "container toolkit": "install"},
    "dkms": {"driver": "keep", "docker": "install", "container toolkit": "install"},
    # The proprietary driver apt owns stays proprietary on Hopper (open is only recommended there).
    "dkms-nomodule": {"driver": "keep", "docker": "install", "container toolkit": "install"},
    "docker-ce": {"driver": "install", "docker": "adopt", "container toolkit": "install"},
    "secure-boot": {"driver": "refuse"},
}
NOTE = re.compile(r"(driver|docker|container toolkit): (install|keep|upgrade|adopt|takeover|unmanaged): (.*)$")


@dataclass(frozen=True)
class Brownfield:
    target: simfleet.Fleet
    record: simfleet.FleetRecord
    py: Path
    yml: Path
    hosts: dict[str, str]  # profile -> host name

    def sh(self, profile: str, command: str, check: bool = True) -> str:
        done = dockercli.exec_in(self.target.container(self.hosts[profile]), ["sh", "-c", command], check=False)
        out = done.stdout.decode(errors="replace")
        if check and done.returncode != 0:
            raise AssertionError(f"{profile}: `{command}` exited {done.returncode}: {out} {done.stderr.decode()}")
        return out


@pytest.fixture(scope="module")
def fleet() -> Iterator[Brownfield]:
    target = simfleet.Fleet(root=pyfleet.ROOT, name=FLEET)
    simfleet.down(target)
    profiles = list(EXPECTED)
    record = simfleet.up(target, assign_specs([parse_gpu_spec("h200x1")], len(profiles)), log=lambda _: None)
    try:
        for host, profile in zip(record.hosts, profiles, strict=True):
            brownfield.apply(record, host, profile)
        py, yml = inventories.write(target, record)
        yield Brownfield(target, record, py, yml, {p: h.name for p, h in zip(profiles, record.hosts, strict=True)})
    finally:
        simfleet.down(target)
        inventories.remove(target)


def core_decisions(fleet: Brownfield, profile: str, tmp: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The host's own probe -> ``ms4fleet plan --probe``: its decision lines, or its one-line refusal."""
    name = fleet.hosts[profile]
    report = dockercli.exec_in(fleet.target.container(name), ["python3", "-"], input_bytes=PROBE.read_bytes())
    probe = tmp / f"{name}.json"
    probe.write_bytes(report.stdout)
    rc = main(["plan", str(fleet.yml), "--limit", name, "--probe", f"{name}={probe}"])
    out = capsys.readouterr()
    if rc == 2:
        [line] = out.err.splitlines()
        return [line.removeprefix("ms4fleet: error: ")]
    assert rc == 0, out.err
    prefix = f"{name}: "
    lines = [line.removeprefix(prefix) for line in out.out.splitlines() if line.startswith(prefix)]
    # plan --probe says "driver adopt: why", the engines' notes "driver: adopt: why": one form.
    names = {"driver": "driver", "docker": "docker", "toolkit": "container toolkit"}
    return [f"{names[what]}: {rest}" for what, rest in (line.split(" ", 1) for line in lines)]


def engine_decisions(output: str, name: str) -> list[str]:
    """The decision lines an engine printed for host ``name`` (pyinfra: ``[name] driver: adopt: why``; Ansible:
    the ``msg`` list under ``ok: [name]``), or its refusal: the text from ``name: `` to the end of the line."""
    found: list[str] = []
    current = None
    for raw in output.splitlines():
        head = re.match(r"^(ok|fatal|failed|changed|skipping): \[([^\]]+)\]", raw)
        current = head.group(2) if head else current
        line = raw.strip().rstrip(",")
        if line.startswith(f"[{name}] "):
            line = line.removeprefix(f"[{name}] ")
        elif current == name and head and raw.rstrip().endswith("}") and "=> {" in raw:
            message = json.loads(raw.split("=> ", 1)[1]).get("msg", "")
            line = message if isinstance(message, str) else ""
        elif current == name and line.startswith('"msg": "'):
            line = json.loads(line.removeprefix('"msg": '))
        elif current == name and line.startswith('"') and line.endswith('"'):
            line = json.loads(line)
        else:
            continue
        match = NOTE.match(line)
        # Other lines name the host too (pyinfra's "no GPU driver answered the health check" before a driver).
        refusal = line.find(f"{name}: ") if "health check" not in line else -1
        text = match.group(0) if match else line[refusal:].splitlines()[0] if refusal >= 0 else None
        if text and text not in found:
            found.append(text)
    return found


def test_each_profile_is_decided_alike_by_the_core_and_both_engines(
    fleet: Brownfield, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    core = {p: core_decisions(fleet, p, tmp_path, capsys) for p in EXPECTED}
    for profile, expected in EXPECTED.items():
        if expected == {"driver": "refuse"}:
            [line] = core[profile]
            assert line.startswith(f"{fleet.hosts[profile]}: Secure Boot is on"), line
            continue
        actions = {m.group(1): m.group(2) for m in map(NOTE.match, core[profile]) if m}
        assert actions == expected, (profile, core[profile])
    dry = pyfleet.pyinfra(pyfleet.Fleet(fleet.target, fleet.record, fleet.py), "--dry")
    check = simrun.playbook(fleet.yml, "site.yml", "--check")
    for profile, name in fleet.hosts.items():
        for engine, run in (("pyinfra", dry), ("ansible", check)):
            printed = engine_decisions(run.output, name)
            assert len(printed) == len(core[profile]), (engine, profile, printed, run.output[-6000:])
            # A refusal may carry the engine's own words after the core's line.
            printed = [line[: len(want)] for line, want in zip(printed, core[profile], strict=True)]
            assert printed == core[profile], (engine, profile, run.output[-6000:])


def inventory(fleet: Brownfield, path: Path, profiles: dict[str, dict[str, object]]) -> pyfleet.Fleet:
    """A pyinfra inventory of ``profiles``' hosts, each with its ``ms4fleet_provision`` additions."""
    hosts = [h for h in fleet.record.hosts if h.name in {fleet.hosts[p] for p in profiles}]
    record = replace(fleet.record, hosts=hosts)
    lines = [inventories.render_pyinfra(record)]
    for profile, extra in profiles.items():
        for key, value in extra.items():
            # The sim's group data stays; this host's own provision settings go on top (pyinfra: host wins).
            lines.append(
                f"for name, data in {inventories.GROUP}[0]:\n"
                f"    if name == {fleet.hosts[profile]!r}:\n"
                f"        data['ms4fleet_provision'] = {{**{inventories.GROUP}[1]['ms4fleet_provision'], {key!r}: {value!r}}}\n"
            )
    path.write_text("\n".join(lines), encoding="utf-8")
    return pyfleet.Fleet(fleet.target, record, path)


def status(fleet: Brownfield, profile: str, port: int = 8000) -> str:
    return fleet.sh(profile, f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/v1/models", check=False)


def host(fleet: Brownfield, profile: str) -> simfleet.HostRecord:
    return next(h for h in fleet.record.hosts if h.name == fleet.hosts[profile])


def started_at(container: str) -> str:
    info = dockercli.inspect("container", container)
    assert info is not None, container
    return str(info["State"]["StartedAt"])


def reboot(fleet: Brownfield, profile: str, timeout: float = 180.0) -> None:
    container = fleet.target.container(fleet.hosts[profile])
    started = started_at(container)
    dockercli.exec_in(container, ["systemctl", "reboot"], check=False)
    deadline = time.monotonic() + timeout
    while started_at(container) == started:
        assert time.monotonic() < deadline, f"{container} did not restart"
        time.sleep(0.5)
    wait_until_ready(fleet.record.endpoint(host(fleet, profile)))


@pytest.fixture(scope="module")
def deployed(fleet: Brownfield, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pyfleet.Run]:
    """The DKMS hosts deployed and serving: the open driver kept, the proprietary one left alone (unmanaged).
    One run for both: one host plans driver operations and the other none, which pyinfra's operation order
    must take (it found a cycle there before the packages loop used host.loop)."""
    path = tmp_path_factory.mktemp("inventory") / "dkms.py"
    settings: dict[str, dict[str, object]] = {"dkms": {}, "dkms-nomodule": {"manage_driver": False}}
    run = pyfleet.pyinfra(inventory(fleet, path, settings))
    return dict.fromkeys(settings, run)


def test_the_dkms_host_boots_its_pending_kernel_with_the_driver_loaded(
    fleet: Brownfield, deployed: dict[str, pyfleet.Run]
) -> None:
    assert deployed["dkms"].rc == 0, deployed["dkms"].output[-5000:]
    assert status(fleet, "dkms") == "200"
    assert fleet.sh("dkms", "cat /run/nvidia-sim/kernel").strip() == brownfield.RUNNING_KERNEL
    assert fleet.sh("dkms", "dkms status").splitlines() == [
        f"nvidia/580.95.05, {k}, x86_64: installed" for k in (brownfield.RUNNING_KERNEL, brownfield.PENDING_KERNEL)
    ]
    reboot(fleet, "dkms")
    assert fleet.sh("dkms", "cat /run/nvidia-sim/kernel").strip() == brownfield.PENDING_KERNEL
    assert fleet.sh("dkms", "modinfo -F filename nvidia").strip() == (
        f"/lib/modules/{brownfield.PENDING_KERNEL}/updates/dkms/nvidia.ko"
    )
    assert fleet.sh("dkms", "nvidia-smi --query-gpu=driver_version --format=csv,noheader").split() == ["580.95.05"]
    deadline = time.monotonic() + 180
    while status(fleet, "dkms") != "200":
        assert time.monotonic() < deadline, fleet.sh("dkms", "systemctl --no-pager status 'ms4fleet-vllm-*'", False)
        time.sleep(2)


def test_a_reboot_into_a_kernel_without_the_module_is_refused_while_the_replica_serves(
    fleet: Brownfield, deployed: dict[str, pyfleet.Run], tmp_path: Path
) -> None:
    assert deployed["dkms-nomodule"].rc == 0, deployed["dkms-nomodule"].output[-5000:]
    assert status(fleet, "dkms-nomodule") == "200"
    seen: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            seen.append(status(fleet, "dkms-nomodule"))
            time.sleep(0.5)

    def polled(change: Callable[[], Any]) -> Any:
        stop.clear()
        poller = threading.Thread(target=poll)
        poller.start()
        try:
            return change()
        finally:
            stop.set()
            poller.join()

    # The driver handed to ms4fleet with driver_takeover: the open one replaces the proprietary one and
    # needs a reboot; the kernel that boots next has no module (no headers, so DKMS built none).
    run = polled(
        lambda: pyfleet.pyinfra(inventory(fleet, tmp_path / "open.py", {"dkms-nomodule": {"driver_takeover": True}}))
    )
    assert run.rc != 0, run.output[-5000:]
    name = fleet.hosts["dkms-nomodule"]
    refusals = [line for line in run.output.splitlines() if "reboot refused" in line]
    assert refusals and all(brownfield.PENDING_KERNEL in line for line in refusals), run.output[-5000:]
    assert f"[{name}] driver: keep: driver 580.95.05 (proprietary, loaded) installed by DKMS" in run.output
    # Never rebooted: the old module is still the loaded one, and the replica answered throughout.
    assert fleet.sh("dkms-nomodule", "cat /run/nvidia-sim/kernel").strip() == brownfield.RUNNING_KERNEL
    assert seen and set(seen) == {"200"}, seen
    assert status(fleet, "dkms-nomodule") == "200"

    # site.yml refuses the same reboot with the core's line (the reboot the driver still waits for).
    doc = yaml.safe_load(fleet.yml.read_text(encoding="utf-8"))
    group = doc["all"]["children"][inventories.GROUP]
    group["hosts"][name]["ms4fleet_provision"] = {**group["vars"]["ms4fleet_provision"], "driver_takeover": True}
    yml = tmp_path / "open.yml"
    yml.write_text(yaml.safe_dump(doc), encoding="utf-8")
    seen.clear()
    site = polled(lambda: simrun.playbook(yml, "site.yml", "--limit", name))
    assert site.rc != 0, site.output[-5000:]
    refusal = (
        f"{name}: reboot refused: kernel {brownfield.PENDING_KERNEL} (the one that boots next) has no NVIDIA module"
    )
    assert refusal in site.output, site.output[-5000:]
    assert fleet.sh("dkms-nomodule", "cat /run/nvidia-sim/kernel").strip() == brownfield.RUNNING_KERNEL
    assert seen and set(seen) == {"200"}, seen
    assert status(fleet, "dkms-nomodule") == "200"
