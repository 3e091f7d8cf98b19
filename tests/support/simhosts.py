"""pytest fixtures and helpers for tests that need a simulated fleet.

Use them from any ``conftest.py`` by importing the fixtures by name::

    from tests.support.simhosts import sim_faults, sim_fleet  # noqa: F401

``sim_fleet`` (session) brings up fleet ``pytest`` with three hosts in a temporary project directory and
removes every container, network and volume it made when the session ends, also after failures:

- ``pytest-1``: 8 x H200 SXM (an NVSwitch HGX board);
- ``pytest-2``: 2 x H100 NVL (PCIe, no NVSwitch);
- ``pytest-3``: 2 x H100 PCIe, left bare by the sim's own tests.

``sim_faults`` (per test) sets the stand-in's fault switches on a host and clears them after the test.
Helpers: ``SimHost.run``/``sudo``/``reboot``, ``add_nvidia_repo``, ``install_docker``, ``load_standin``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shlex
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest

from ms4fleet_sim import aptrepo, dockercli, faults, standin_image
from ms4fleet_sim import fleet as simfleet
from ms4fleet_sim.profiles import assign_specs, parse_gpu_spec
from ms4fleet_sim.ssh import Endpoint, Result, connect, run, wait_until_ready

FLEET_NAME = "pytest"
FLEET_SPECS = ("h200x8", "h100-nvl:2", "h100-pcie:2")
HGX = "pytest-1"  # 8 x H200 SXM, NVSwitch
PCIE = "pytest-2"  # 2 x H100 NVL, no NVSwitch
BARE = "pytest-3"  # never provisioned by the sim's own tests
NVIDIA_KEYRING = "/etc/apt/keyrings/nvidia-sim.gpg"
NVIDIA_SOURCES = "/etc/apt/sources.list.d/nvidia.sources"


class CommandFailed(AssertionError):
    """A command on a sim host exited non-zero where the test needed it to succeed."""


@dataclass
class SimHost:
    """One sim host as a test sees it: SSH as the fleet user (paramiko), plus its container."""

    name: str
    container: str
    endpoint: Endpoint
    gpu_kind: str
    gpu_count: int
    _client: paramiko.SSHClient | None = None

    def _ssh(self) -> paramiko.SSHClient:
        transport = self._client.get_transport() if self._client is not None else None
        if self._client is None or transport is None or not transport.is_active():
            self._client = connect(self.endpoint)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def run(self, command: str, check: bool = True, timeout: float = 600.0) -> Result:
        result = run(self._ssh(), command, timeout=timeout)
        if check and result.rc != 0:
            raise CommandFailed(f"{self.name}: `{command}` exited {result.rc}\n{result.stdout}\n{result.stderr}")
        return result

    def sudo(self, command: str, check: bool = True, timeout: float = 600.0) -> Result:
        return self.run(f"sudo -n sh -c {shlex.quote(command)}", check=check, timeout=timeout)

    def started_at(self) -> str:
        info = dockercli.inspect("container", self.container)
        return str(info["State"]["StartedAt"]) if info else ""

    def reboot(self, timeout: float = 120.0) -> None:
        """``systemctl reboot`` over SSH, then wait until the host is back and booted."""
        before = self.started_at()
        # The connection may drop before the command returns.
        with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
            self.sudo("systemctl reboot", check=False, timeout=30)
        self.close()
        deadline = time.monotonic() + timeout
        while self.started_at() == before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: the container did not restart within {timeout:.0f}s")
            time.sleep(0.2)
        wait_until_ready(self.endpoint, timeout=max(10.0, deadline - time.monotonic()))

    def apt_install(self, *packages: str) -> Result:
        return self.sudo(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades " + " ".join(packages)
        )


@dataclass
class SimFleet:
    fleet: simfleet.Fleet
    record: simfleet.FleetRecord
    hosts: dict[str, SimHost]

    def __getitem__(self, name: str) -> SimHost:
        return self.hosts[name]


def bring_up(root: Path, name: str = FLEET_NAME, specs: tuple[str, ...] = FLEET_SPECS) -> SimFleet:
    target = simfleet.Fleet(root=root, name=name)
    try:
        record = simfleet.up(target, assign_specs([parse_gpu_spec(s) for s in specs], len(specs)), log=lambda _: None)
    except BaseException:
        simfleet.down(target)
        raise
    hosts = {h.name: SimHost(h.name, h.container, record.endpoint(h), h.gpu_kind, h.gpu_count) for h in record.hosts}
    return SimFleet(target, record, hosts)


@contextlib.contextmanager
def running(root: Path, name: str = FLEET_NAME, specs: tuple[str, ...] = FLEET_SPECS) -> Iterator[SimFleet]:
    """``bring_up`` for a fixture: one clear failure without a Docker engine; afterwards every host's SSH
    connection closed and the fleet down."""
    if not dockercli.daemon_ok():
        pytest.fail("the sim needs a running dockerd: run scripts/ensure-docker.sh first")
    sim = bring_up(root, name=name, specs=specs)
    try:
        yield sim
    finally:
        for host in sim.hosts.values():
            host.close()
        simfleet.down(sim.fleet)


def put_files(host: SimHost, files: dict[str, tuple[bytes, int]]) -> None:
    """Write ``files`` (absolute path -> (bytes, mode), owned by root) into the host's container."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (blob, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(blob), mode
            tar.addfile(info, io.BytesIO(blob))
    dockercli.run(["cp", "-", f"{host.container}:/"], input_bytes=buffer.getvalue())


def add_nvidia_repo(host: SimHost, signed: bool = True) -> None:
    """Trust the sim's NVIDIA repository the way a real host trusts NVIDIA's (key download + deb822 source)."""
    url = aptrepo.NVIDIA_URL if signed else aptrepo.NVIDIA_UNSIGNED_URL
    signed_by = f"Signed-By: {NVIDIA_KEYRING}\n" if signed else ""
    host.sudo(
        f"curl -fsS {aptrepo.KEY_URL} | gpg --dearmor --yes -o {NVIDIA_KEYRING} && "
        f"printf 'Types: deb\\nURIs: {url}\\nSuites: /\\n{signed_by}' > {NVIDIA_SOURCES} && apt-get update -q"
    )


@dataclass
class DriverHost:
    """A host after ``provision_driver``: what ``nvidia-smi`` said before the reboot the package asked for."""

    host: SimHost
    before_reboot: Result
    reboot_required: bool


def provision_driver(host: SimHost, package: str = "nvidia-driver-580-open") -> DriverHost:
    """Install a driver from the signed repository, then reboot so that its module is loaded."""
    add_nvidia_repo(host)
    host.apt_install(package)
    reboot_required = host.run("test -f /var/run/reboot-required", check=False).rc == 0
    before = host.run("nvidia-smi", check=False)
    host.reboot()
    return DriverHost(host, before, reboot_required)


def install_docker(host: SimHost) -> None:
    """docker.io from the offline Debian mirror, the container toolkit, and Docker configured for GPUs."""
    host.apt_install("docker.io", "nvidia-container-toolkit")
    host.sudo("nvidia-ctk runtime configure --runtime=docker && systemctl restart docker")


def load_standin(host: SimHost) -> str:
    """Build (cached) and load the vLLM stand-in image into the host's Docker; return its tag."""
    tag = standin_image.ensure_image()
    standin_image.load_into(host.container, tag)
    return tag


def propagate_faults(host: SimHost, switches: dict[str, Any]) -> None:
    """Also update the copy the hook put into running GPU containers, so a running stand-in sees the switch."""
    listing = host.sudo("command -v docker >/dev/null && docker ps -q || true").stdout.split()
    encoded = base64.b64encode(json.dumps(switches).encode()).decode()
    inner = f"test -d /run/nvidia-sim && echo {encoded} | base64 -d > /run/nvidia-sim/faults.json || true"
    for container in listing:
        host.sudo(f"docker exec {container} sh -c {shlex.quote(inner)}", check=False)


@pytest.fixture(scope="session")
def sim_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    with running(tmp_path_factory.mktemp("sim-project")) as sim:
        yield sim


@pytest.fixture
def sim_faults(sim_fleet: SimFleet) -> Iterator[Callable[..., None]]:
    """``sim_faults("pytest-1", health_503=True)``: set switches for this test only."""
    touched: set[str] = set()

    def set_switches(host_name: str, **switches: Any) -> None:
        host = sim_fleet[host_name]
        touched.add(host_name)
        faults.write(host.container, switches)
        propagate_faults(host, switches)

    yield set_switches
    for name in touched:
        faults.write(sim_fleet[name].container, {})
        propagate_faults(sim_fleet[name], {})
