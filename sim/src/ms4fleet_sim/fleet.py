"""Bringing a simulated fleet up, reporting on it and tearing it down.

A fleet is one private Docker network, one apt repository container, its weights mirror and registry
containers (``services``) and N host containers, all named ``ms4fleet-sim-…`` and labelled
``io.ms4fleet.sim`` (+ ``io.ms4fleet.sim.fleet=<name>``) so that
``down`` can find and remove every one of them, including their volumes.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ms4fleet_sim import aptrepo, dockercli, hostfiles, hostimage, keys, services, signing
from ms4fleet_sim.cache import build_lock, recipe_hash
from ms4fleet_sim.profiles import GpuSpec, render_profile
from ms4fleet_sim.ssh import Endpoint, wait_until_ready

PREFIX = "ms4fleet-sim"
# The fleet `sim up` makes without --fleet, whose inventories are inventory/sim.{py,yml}. MS4FLEET_SIM_FLEET
# renames it, so a test can run the documented commands exactly as written beside a developer's own fleet.
DEFAULT_FLEET = os.environ.get("MS4FLEET_SIM_FLEET") or "gpu"
FIRST_PORT = 2201
CONFIG_LABEL = "io.ms4fleet.sim.config"
PORT_LABEL = "io.ms4fleet.sim.ssh_port"
# scripts/ensure-docker.sh raises fs.inotify.max_user_instances to this; below it hosts may fail to boot.
INOTIFY_INSTANCES_WANTED = 1024
GPUS_LABEL = "io.ms4fleet.sim.gpus"

# What a container needs to run systemd as PID 1 and Docker nested inside (see test-world.md).
SYSTEMD_FLAGS = (
    "--cap-add", "SYS_ADMIN",
    "--cap-add", "NET_ADMIN",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--cgroupns=host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run",
    "--tmpfs", "/run/lock",
    "--stop-signal", "SIGRTMIN+3",
)  # fmt: skip


@dataclass(frozen=True)
class HostRecord:
    """One sim host as ``up`` leaves it (also what the inventories are rendered from)."""

    name: str
    container: str
    ssh_port: int
    gpu_kind: str
    gpu_count: int
    nvswitch: bool


@dataclass(frozen=True)
class FleetRecord:
    """Everything about an up fleet that later commands and the inventories need."""

    fleet: str
    network: str
    repo_container: str
    user: str
    key_file: str
    known_hosts: str
    host_image: str
    repo_dir: str
    hosts: list[HostRecord]
    # The fleet's services as the controller reaches them (services.Endpoints).
    mirror_url: str = ""
    registry: str = ""
    staging_dir: str = ""

    def endpoint(self, host: HostRecord) -> Endpoint:
        return Endpoint(host.name, host.ssh_port, self.user, Path(self.key_file), Path(self.known_hosts))


@dataclass(frozen=True)
class Fleet:
    """Names and paths of one fleet; ``root`` is the project directory holding ``.sim/``."""

    root: Path
    name: str = DEFAULT_FLEET

    @property
    def network(self) -> str:
        return f"{PREFIX}-{self.name}"

    @property
    def repo_container(self) -> str:
        return f"{PREFIX}-{self.name}-repo"

    @property
    def mirror_container(self) -> str:
        return f"{PREFIX}-{self.name}-mirror"

    @property
    def registry_container(self) -> str:
        return f"{PREFIX}-{self.name}-registry"

    @property
    def sim_dir(self) -> Path:
        return self.root / ".sim"

    @property
    def state_dir(self) -> Path:
        return self.sim_dir / self.name

    @property
    def record_path(self) -> Path:
        return self.state_dir / "fleet.json"

    @property
    def mirror_dir(self) -> Path:
        return self.state_dir / "mirror"

    @property
    def staging_dir(self) -> Path:
        """Where the controller keeps the weights it stages to this fleet's hosts."""
        return self.state_dir / "weights-staging"

    def host_name(self, index: int) -> str:
        return f"{self.name}-{index}"

    def container(self, host: str) -> str:
        return f"{PREFIX}-{host}"

    def volume(self, host: str) -> str:
        return f"{PREFIX}-{host}-docker"

    def labels(self, role: str) -> list[str]:
        return ["--label", f"{dockercli.LABEL}={role}", "--label", f"{dockercli.FLEET_LABEL}={self.name}"]

    def load(self) -> FleetRecord | None:
        if not self.record_path.exists():
            return None
        data = json.loads(self.record_path.read_text(encoding="utf-8"))
        data["hosts"] = [HostRecord(**h) for h in data["hosts"]]
        return FleetRecord(**data)

    def save(self, record: FleetRecord) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.record_path.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports_in_use_by_sim() -> set[int]:
    ports: set[int] = set()
    for cid in dockercli.list_ids("container", dockercli.LABEL):
        info = dockercli.inspect("container", cid)
        labels = info["Config"]["Labels"] if info else {}
        for label in (PORT_LABEL, services.SERVICE_PORT_LABEL):
            if label in labels:
                ports.add(int(labels[label]))
    return ports


def _ensure_network(fleet: Fleet) -> None:
    if dockercli.inspect("network", fleet.network) is None:
        dockercli.run(["network", "create", *fleet.labels("network"), fleet.network])


def _ensure_repo_container(fleet: Fleet, host_image: str, repo_dir: Path) -> None:
    config = recipe_hash(host_image, str(repo_dir))
    info = dockercli.inspect("container", fleet.repo_container)
    if info is not None and info["Config"]["Labels"].get(CONFIG_LABEL) == config:
        if not info["State"]["Running"]:
            dockercli.run(["start", fleet.repo_container])
        return
    if info is not None:
        dockercli.run(["rm", "-f", fleet.repo_container])
    dockercli.run(
        [
            "run", "-d", "--name", fleet.repo_container, *fleet.labels("repo"),
            "--label", f"{CONFIG_LABEL}={config}",
            "--network", fleet.network, "--network-alias", aptrepo.REPO_ALIAS,
            "--restart", "unless-stopped",
            "-v", f"{repo_dir}:/srv/repo:ro",
            host_image, "python3", "-m", "http.server", "80", "--directory", "/srv/repo",
        ]
    )  # fmt: skip


def _host_files(fleet: Fleet, host: str, spec: GpuSpec, client_pub: str) -> bytes:
    host_key = fleet.state_dir / "hostkeys" / f"{host}_ed25519"
    host_pub = keys.ensure_keypair(host_key, f"root@{host}")
    tar = hostfiles.TarBuilder()
    hostfiles.add_hardware(tar, render_profile(host, spec))
    hostfiles.add_identity(tar, host_key.read_bytes(), host_pub, client_pub)
    hostfiles.add_apt_sources(tar, aptrepo.DEBIAN_URL, signing.public_key(armor=False))
    return tar.render()


class PortAllocator:
    """Hands out free 127.0.0.1 ports for SSH, never one another sim container already publishes."""

    def __init__(self, used: set[int]) -> None:
        self._used = set(used)
        self._next = FIRST_PORT
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            while self._next in self._used or not _port_free(self._next):
                self._next += 1
            self._used.add(self._next)
            return self._next


def _create_host(
    fleet: Fleet, host: str, spec: GpuSpec, ports: PortAllocator, image: str, config: str, files: bytes
) -> int:
    """Create, fill and start one host container; return its SSH port."""
    container = fleet.container(host)
    volume = fleet.volume(host)
    if dockercli.inspect("volume", volume) is None:
        dockercli.run(["volume", "create", *fleet.labels("volume"), volume])
    for _ in range(20):
        port = ports.take()
        dockercli.run(
            [
                "create", "--name", container, "--hostname", host, *fleet.labels("host"),
                "--label", f"{CONFIG_LABEL}={config}", "--label", f"{PORT_LABEL}={port}",
                "--label", f"{GPUS_LABEL}={spec.label()}",
                "--network", fleet.network, "--restart", "unless-stopped",
                *SYSTEMD_FLAGS,
                # Nested Docker keeps its data on a volume (a real filesystem, not the container's overlay).
                "-v", f"{volume}:/var/lib/docker",
                "-p", f"127.0.0.1:{port}:22",
                image,
            ]
        )  # fmt: skip
        dockercli.run(["cp", "-a", "-", f"{container}:/"], input_bytes=files)
        try:
            dockercli.run(["start", container])
        except dockercli.DockerError as exc:
            # dockerd can keep a port reserved after a failed start: take the next one.
            if "port is already allocated" not in str(exc):
                raise
            dockercli.run(["rm", "-f", container])
            continue
        return port
    raise RuntimeError(f"{host}: no free SSH port found after 20 attempts")


def _known_hosts(fleet: Fleet, hosts: list[HostRecord]) -> Path:
    path = fleet.state_dir / "known_hosts"
    lines = []
    for host in hosts:
        pub = (fleet.state_dir / "hostkeys" / f"{host.name}_ed25519.pub").read_text(encoding="utf-8").split()
        lines.append(f"[127.0.0.1]:{host.ssh_port} {pub[0]} {pub[1]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def remove_fleet_hosts(fleet: Fleet, keep: set[str]) -> None:
    """Remove host containers (and their volumes) of ``fleet`` whose names are not in ``keep``."""
    for cid in dockercli.list_ids("container", f"{dockercli.FLEET_LABEL}={fleet.name}"):
        info = dockercli.inspect("container", cid)
        if info is None or info["Config"]["Labels"].get(dockercli.LABEL) != "host":
            continue
        host = info["Config"]["Hostname"]
        if host not in keep:
            dockercli.run(["rm", "-f", cid])
            dockercli.run(["volume", "rm", "-f", fleet.volume(host)], check=False)


def ensure_infrastructure(fleet: Fleet, log: Callable[[str], None] = print) -> tuple[str, Path]:
    """The host image, the apt repository, the fleet network and the repository container; returns
    (host image tag, repository directory). The weights mirror and the registry are ``ensure_services``."""
    if not dockercli.daemon_ok():
        raise RuntimeError("dockerd is not reachable: run scripts/ensure-docker.sh")
    messages: list[str] = []
    image = hostimage.ensure_host_image(messages)
    repo_dir = aptrepo.ensure_repo(image, messages)
    for message in messages:
        log(message)
    _ensure_network(fleet)
    _ensure_repo_container(fleet, image, repo_dir)
    return image, repo_dir


def ensure_services(
    fleet: Fleet, host_image: str, ports: PortAllocator, log: Callable[[str], None]
) -> services.Endpoints:
    """The fleet's weights mirror and registry containers, up and filled."""
    mirror_url = services.ensure_mirror(
        fleet.labels("mirror"), fleet.network, fleet.mirror_container, host_image, fleet.mirror_dir, ports.take
    )
    registry = services.ensure_registry(
        fleet.labels("registry"), fleet.network, fleet.registry_container, host_image, ports.take, log
    )
    return services.Endpoints(mirror_url, registry)


def up(fleet: Fleet, specs: list[GpuSpec], log: Callable[[str], None] = print) -> FleetRecord:
    """Bring the fleet to ``len(specs)`` hosts (host i gets specs[i]) and its services up; reuse hosts and
    services whose config is unchanged."""
    image, repo_dir = ensure_infrastructure(fleet, log)
    client_key = fleet.sim_dir / "id_ed25519"
    client_pub = keys.ensure_keypair(client_key, "ms4fleet-sim")

    names = [fleet.host_name(i + 1) for i in range(len(specs))]
    remove_fleet_hosts(fleet, keep=set(names))

    def ensure_host(item: tuple[str, GpuSpec], ports: PortAllocator) -> HostRecord:
        name, spec = item
        config = recipe_hash(image, spec.label(), client_pub, repo_dir.name, hostfiles.hardware_hash(), SYSTEMD_FLAGS)
        info = dockercli.inspect("container", fleet.container(name))
        if info is not None and info["Config"]["Labels"].get(CONFIG_LABEL) == config:
            port = int(info["Config"]["Labels"][PORT_LABEL])
            if not info["State"]["Running"]:
                dockercli.run(["start", fleet.container(name)])
        else:
            if info is not None:
                dockercli.run(["rm", "-f", fleet.container(name)])
                dockercli.run(["volume", "rm", "-f", fleet.volume(name)], check=False)
            port = _create_host(fleet, name, spec, ports, image, config, _host_files(fleet, name, spec, client_pub))
        nvswitch = bool(render_profile(name, spec)["nvswitch"])
        return HostRecord(name, fleet.container(name), port, spec.kind, spec.count, nvswitch)

    # Ports are free until a container publishes them: another `sim up` (a test, a second fleet) must not
    # pick the same ones in between.
    with build_lock("sim-ports"):
        ports = PortAllocator(_ports_in_use_by_sim())
        endpoints = ensure_services(fleet, image, ports, log)
        with ThreadPoolExecutor(max_workers=4) as pool:
            hosts = list(pool.map(lambda item: ensure_host(item, ports), zip(names, specs, strict=True)))
    record = FleetRecord(
        fleet=fleet.name,
        network=fleet.network,
        repo_container=fleet.repo_container,
        user=hostimage.SIM_USER,
        key_file=str(client_key),
        known_hosts=str(_known_hosts(fleet, hosts)),
        host_image=image,
        repo_dir=str(repo_dir),
        hosts=hosts,
        mirror_url=endpoints.mirror_url,
        registry=endpoints.registry,
        staging_dir=str(fleet.staging_dir),
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        states = list(pool.map(lambda h: _wait_booted(record, h), hosts))
    for host, system_state in zip(hosts, states, strict=True):
        if system_state not in ("running", "degraded"):
            raise RuntimeError(f"{host.name}: systemd reports {system_state!r} after boot")
    fleet.save(record)
    return record


def _inotify_hint() -> str:
    try:
        limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    except (OSError, ValueError):
        return ""
    if limit >= INOTIFY_INSTANCES_WANTED:
        return ""
    return (
        f"; fs.inotify.max_user_instances is {limit}, which many systemd hosts exhaust: "
        "run scripts/ensure-docker.sh (raises it)"
    )


def _wait_booted(record: FleetRecord, host: HostRecord) -> str:
    """Wait for SSH and boot; on timeout say what the container printed (systemd's console)."""
    try:
        return wait_until_ready(record.endpoint(host))
    except TimeoutError as exc:
        tail = dockercli.run(["logs", "--tail", "8", host.container], check=False)
        console = (tail.stdout + tail.stderr).decode(errors="replace").strip()
        raise TimeoutError(f"{exc}{_inotify_hint()}\n{host.container} console:\n{console}") from None


def status(fleet: Fleet) -> list[dict[str, Any]]:
    """One row per container of the fleet: name, role, state, SSH port, GPUs, systemd state."""
    rows = []
    for cid in dockercli.list_ids("container", f"{dockercli.FLEET_LABEL}={fleet.name}"):
        info = dockercli.inspect("container", cid)
        if info is None:
            continue
        labels = info["Config"]["Labels"]
        running = bool(info["State"]["Running"])
        system = ""
        if running and labels.get(dockercli.LABEL) == "host":
            proc = dockercli.exec_in(cid, ["systemctl", "is-system-running"], check=False)
            system = proc.stdout.decode().strip()
        rows.append(
            {
                "name": info["Name"].lstrip("/"),
                "role": labels.get(dockercli.LABEL, ""),
                "state": info["State"]["Status"],
                "endpoint": _endpoint(labels),
                "gpus": labels.get(GPUS_LABEL, ""),
                "systemd": system,
            }
        )
    return sorted(rows, key=lambda row: (row["role"] != "host", row["name"]))


def _endpoint(labels: dict[str, str]) -> str:
    """What the controller connects to: a host's SSH port, a service's published port."""
    if PORT_LABEL in labels:
        return f"ssh 127.0.0.1:{labels[PORT_LABEL]}"
    if services.SERVICE_PORT_LABEL in labels:
        return f"http 127.0.0.1:{labels[services.SERVICE_PORT_LABEL]}"
    return ""


def down(fleet: Fleet | None) -> dict[str, int]:
    """Remove every container, network and volume of ``fleet`` (or of every sim fleet when None)."""
    label = dockercli.LABEL if fleet is None else f"{dockercli.FLEET_LABEL}={fleet.name}"
    removed = {"containers": 0, "networks": 0, "volumes": 0}
    containers = dockercli.list_ids("container", label)
    if containers:
        dockercli.run(["rm", "-f", "-v", *containers])
    removed["containers"] = len(containers)
    networks = dockercli.list_ids("network", label)
    for network in networks:
        # Containers attached from outside (Molecule's) would keep the network busy.
        info = dockercli.inspect("network", network) or {}
        for endpoint in (info.get("Containers") or {}).values():
            dockercli.run(["network", "disconnect", "-f", network, endpoint["Name"]], check=False)
        dockercli.run(["network", "rm", network])
    removed["networks"] = len(networks)
    volumes = dockercli.list_ids("volume", label)
    if volumes:
        dockercli.run(["volume", "rm", "-f", *volumes])
    removed["volumes"] = len(volumes)
    if fleet is not None and fleet.record_path.exists():
        fleet.record_path.unlink()
    return removed
