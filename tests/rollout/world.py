"""A simulated serving fleet for rollout tests and benchmarks: GPU hosts with the 580 driver loaded and the
vLLM stand-in installed natively (``runtime.kind = native``: no nested Docker, so the world stays light on
two cores), a load balancer host running Debian's nginx, and a loopback weights mirror with two revisions.

The LB host is not deployed by ms4fleet, so nginx's .debs are downloaded once (cached) with apt inside the
sim's own host image, exactly as the sim builds its mirror, and installed on the LB host from those files:
Debian's package, installed offline on the host. The GPU hosts get the same package as their host proxy,
with the core's config, as a deploy would have left them (``install_host_proxy``).

``World.inventory(**serving)`` writes the GPU hosts' pyinfra inventory for a release; ``World.lb_inventory``
the load balancer's. Hosts reach each other (LB -> replicas) over the fleet's Docker network.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ms4fleet.config import HostConfig
from ms4fleet.hostplan import host_plan
from ms4fleet.proxy import PROXY_CONF
from ms4fleet_sim import dockercli, standin_image, weights_mirror
from ms4fleet_sim import fleet as simfleet
from ms4fleet_sim.cache import build_lock, cache_root, recipe_hash
from ms4fleet_sim.hostfiles import KERNEL_UNIT
from ms4fleet_sim.inventories import group_data, py_literal
from tests.support.simhosts import NVIDIA_SOURCES, SimFleet, SimHost, bring_up, provision_driver, put_files

REVISION_A = weights_mirror.SIM_REVISION
REVISION_B = "6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f"
NGINX_PACKAGES = ("nginx",)
VENV = "/opt/ms4fleet/vllm"
STANDIN_ROOT = "/opt/ms4fleet-standin"
LB_PORT = 8080
# The settings every release of the world shares (a release adds its weights and overrides).
RUNTIME = {"kind": "native", "venv": VENV}
# Open: the load generator and the LB's clients carry no key (the generated key is tested on its own).
SERVING = {"bind_address": "0.0.0.0", "tensor_parallel_size": 1, "max_model_len": 32768, "open_endpoint": True}
# A prefix drop-in: systemd applies it to every unit named ms4fleet-vllm-*.service.
STANDIN_DROPIN = "/etc/systemd/system/ms4fleet-vllm-.service.d/sim-gpu-registry.conf"
KERNEL_DROPIN = f"/etc/systemd/system/{KERNEL_UNIT}.d/sim-gpu-registry.conf"


def _nginx_debs(host_image: str) -> Path:
    """Debian's nginx and the dependencies the sim host image lacks, downloaded once with apt."""
    path = cache_root() / "rollout-nginx-debs" / recipe_hash(host_image, NGINX_PACKAGES)
    with build_lock("rollout-nginx-debs"):
        if not (path / ".complete").exists():
            path.mkdir(parents=True, exist_ok=True)
            script = (
                "set -e; apt-get update -qq; apt-get install -y -qq --download-only "
                f"-o Dir::Cache::archives=/out {' '.join(NGINX_PACKAGES)}; rm -rf /out/partial /out/lock"
            )
            dockercli.run(
                ["run", "--rm", "-v", f"{path}:/out", "--label", f"{dockercli.LABEL}=build", host_image,
                 "sh", "-c", script],
                timeout=900,
            )  # fmt: skip
            (path / ".complete").write_text("ok\n")
    return path


def install_native_standin(host: SimHost) -> None:
    """The stand-in as ``/opt/ms4fleet/vllm/bin/vllm`` (what a native ``runtime.venv`` provides), and GPU
    memory registration open to the service user as /dev/nvidia* device nodes are (mode 0666). The sim keeps
    that registry in a file where the driver keeps it in the kernel: a drop-in for every replica unit lets
    the sandboxed stand-in (ProtectSystem=strict) write it."""
    launcher = standin_image.LAUNCHER.replace(standin_image.INSTALL_ROOT, STANDIN_ROOT).encode()
    files = {f"{STANDIN_ROOT}/{name}": (blob, 0o644) for name, blob in standin_image._code_files().items()}
    files[f"{VENV}/bin/vllm"] = (launcher, 0o755)
    files[STANDIN_DROPIN] = (b"[Service]\nReadWritePaths=/run/nvidia-sim/procs\n", 0o644)
    # The registry lives in /run, made anew at every boot by the sim's kernel unit: opened again after it.
    files[KERNEL_DROPIN] = (b"[Service]\nExecStartPost=/bin/chmod 1777 /run/nvidia-sim/procs\n", 0o644)
    put_files(host, files)
    host.sudo("chmod -R a+rX /opt && chmod 1777 /run/nvidia-sim/procs && systemctl daemon-reload")


def install_host_proxy(host: SimHost, debs: Path, serving: dict[str, Any]) -> None:
    """The host proxy as a deploy leaves it before any rollout (a rollout provisions only what changed since):
    Debian's nginx, with the core's config for the world's serving settings, so the load balancer reaches the
    replicas on their public ports while vLLM listens on loopback."""
    config = HostConfig.from_host_data(
        host.name,
        {"ms4fleet_gpu": {"kind": host.gpu_kind, "count": host.gpu_count}, "ms4fleet_runtime": RUNTIME,
         "ms4fleet_serving": serving},
    )  # fmt: skip
    conf = host_plan(config).file(PROXY_CONF)
    put_files(host, {conf.path: (conf.content.encode(), conf.mode)})
    install_nginx(host, debs)


def install_nginx(host: SimHost, debs: Path) -> None:
    files = {f"/var/cache/ms4fleet-lb/{deb.name}": (deb.read_bytes(), 0o644) for deb in sorted(debs.glob("*.deb"))}
    put_files(host, files)
    host.sudo(
        # dpkg, not apt: apt refuses local files it would not download itself ("Pathname ... not absolute").
        "DEBIAN_FRONTEND=noninteractive dpkg -i /var/cache/ms4fleet-lb/*.deb && systemctl enable --now nginx"
    )


def container_ip(container: str, network: str) -> str:
    info = dockercli.inspect("container", container)
    assert info is not None, container
    return str(info["NetworkSettings"]["Networks"][network]["IPAddress"])


@dataclass
class World:
    sim: SimFleet
    gpu: list[SimHost]
    lb: SimHost
    mirror: weights_mirror.MirrorServer
    root: Path
    # Who may read the replicas' /metrics (the host proxy's metrics listeners): the fleet's own network,
    # where the load balancer and Prometheus (on the LB host) are.
    metrics_allow: list[str]

    @property
    def lb_url(self) -> str:
        return f"http://{container_ip(self.lb.container, self.sim.record.network)}:{LB_PORT}"

    def _connection(self, host: SimHost) -> dict[str, Any]:
        record = self.sim.record
        return {
            "ssh_hostname": "127.0.0.1",
            "ssh_port": host.endpoint.port,
            "ssh_user": record.user,
            "ssh_key": record.key_file,
            "ssh_known_hosts_file": record.known_hosts,
            "ssh_strict_host_key_checking": "yes",
        }

    def settings(self, revision: str = REVISION_A, **serving: Any) -> dict[str, Any]:
        """The ms4fleet settings of one release (``serving`` overrides ``ms4fleet_serving``)."""
        # A release that names a key is not open (the config refuses both).
        base = {k: v for k, v in SERVING.items() if not (k == "open_endpoint" and "api_key" in serving)}
        return {
            # The sim's signed NVIDIA repository, as every sim inventory names it: a rollout that provisions
            # (the host proxy's config changes with the replicas) can install from it.
            "ms4fleet_provision": {
                "nvidia_apt_repo": group_data(self.sim.record)["ms4fleet_provision"]["nvidia_apt_repo"]
            },
            "ms4fleet_runtime": RUNTIME,
            "ms4fleet_serving": {**base, "metrics_allow": self.metrics_allow, **serving},
            "ms4fleet_weights": {
                "source": "mirror",
                "mirror_url": self.mirror.url,
                "allow_insecure": True,
                "revision": revision,
            },
        }

    def inventory(
        self,
        name: str = "inventory",
        revision: str = REVISION_A,
        host_settings: Mapping[str, Mapping[str, Any]] | None = None,
        **serving: Any,
    ) -> Path:
        """The GPU hosts with ms4fleet settings for one release (``serving`` overrides ``ms4fleet_serving``;
        ``host_settings``: a host's own settings, over the shared ones, as ``settings()`` gives them)."""
        hosts = []
        for host in self.gpu:
            data = {
                **self._connection(host),
                "lb_backend_address": container_ip(host.container, self.sim.record.network),
                "ms4fleet_gpu": {"kind": host.gpu_kind, "count": host.gpu_count},
                **(host_settings or {}).get(host.name, {}),
            }
            hosts.append((host.name, data))
        shared = {**self.settings(revision, **serving), "weights_staging_dir": str(self.root / "staging")}
        path = self.root / f"{name}.py"
        path.write_text(f"gpus = {py_literal((hosts, shared))}\n", encoding="utf-8")
        return path

    def ansible_inventory(
        self,
        name: str = "inventory",
        revision: str = REVISION_A,
        host_settings: Mapping[str, Mapping[str, Any]] | None = None,
        **serving: Any,
    ) -> Path:
        """The same hosts and settings for Ansible: groups ms4fleet_gpu and ms4fleet_lb."""
        record = self.sim.record

        def connection(host: SimHost) -> dict[str, Any]:
            return {"ansible_host": "127.0.0.1", "ansible_port": host.endpoint.port}

        gpu_hosts = {
            h.name: {
                **connection(h),
                "lb_backend_address": container_ip(h.container, record.network),
                "ms4fleet_gpu": {"kind": h.gpu_kind, "count": h.gpu_count},
                **(host_settings or {}).get(h.name, {}),
            }
            for h in self.gpu
        }
        shared = {
            "ansible_user": record.user,
            "ansible_ssh_private_key_file": record.key_file,
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={record.known_hosts} -o StrictHostKeyChecking=yes",
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        gpu_vars = {
            **shared,
            **self.settings(revision, **serving),
            "model_weights_staging_dir": str(self.root / "staging-ansible"),
        }
        doc = {
            "all": {
                "children": {
                    "ms4fleet_gpu": {"hosts": gpu_hosts, "vars": gpu_vars},
                    "ms4fleet_lb": {"hosts": {self.lb.name: connection(self.lb)}, "vars": shared},
                }
            }
        }
        path = self.root / f"{name}.yml"
        path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        return path

    def lb_inventory(self) -> Path:
        path = self.root / "lb.py"
        path.write_text(f"lb = {py_literal([(self.lb.name, self._connection(self.lb))])}\n", encoding="utf-8")
        return path

    def faults(self, host: SimHost, **switches: Any) -> None:
        """Fault switches for native stand-ins: the host file, read for every request."""
        text = shlex.quote(json.dumps(switches))
        if switches:
            host.sudo(f"printf %s {text} > /etc/nvidia-sim/faults.json")
        else:
            host.sudo("rm -f /etc/nvidia-sim/faults.json")


def prepare(root: Path, name: str, gpu_hosts: int, spec: str = "h200x2") -> World:
    root.mkdir(parents=True, exist_ok=True)
    sim = bring_up(root / "project", name=name, specs=(spec,) * (gpu_hosts + 1))
    names = [sim.fleet.host_name(i + 1) for i in range(gpu_hosts + 1)]
    gpu, lb = [sim[n] for n in names[:-1]], sim[names[-1]]
    debs = _nginx_debs(sim.record.host_image)
    network = dockercli.inspect("network", sim.record.network)
    assert network is not None, sim.record.network
    metrics_allow = [str(c["Subnet"]) for c in network["IPAM"]["Config"] if ":" not in str(c["Subnet"])]

    def gpu_host(host: SimHost) -> None:
        provision_driver(host)
        # The driver came from the test's own source entry; a rollout that provisions writes the plan's (the
        # same repository: apt refuses two entries of one URL with different keyrings).
        host.sudo(f"rm -f {NVIDIA_SOURCES}")
        install_native_standin(host)
        install_host_proxy(host, debs, {**SERVING, "metrics_allow": metrics_allow})

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = [pool.submit(gpu_host, host) for host in gpu] + [pool.submit(install_nginx, lb, debs)]
        for future in done:
            future.result()
    mirror_root = root / "mirror"
    for revision in (REVISION_A, REVISION_B):
        weights_mirror.build_tree(mirror_root, revision=revision)
    return World(sim, gpu, lb, weights_mirror.serve(mirror_root), root, metrics_allow)


@contextmanager
def world(root: Path, name: str, gpu_hosts: int, spec: str = "h200x2") -> Iterator[World]:
    built = None
    try:
        built = prepare(root, name, gpu_hosts, spec)
        yield built
    finally:
        if built is not None:
            built.mirror.close()
            for host in [*built.gpu, built.lb]:
                host.close()
        simfleet.down(simfleet.Fleet(root=root / "project", name=name))
