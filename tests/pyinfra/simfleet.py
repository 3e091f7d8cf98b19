"""A simulated fleet for the pyinfra engine's end-to-end tests and benchmarks: hosts, weights mirror and
registry from the sim, the stand-in image also as a ``docker save`` archive (the air-gapped path), and
``pyinfra -y INVENTORY deploy.py`` run as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ms4fleet.verdicts import CACHE_ENV
from ms4fleet_sim import dockercli, inventories, standin_image
from ms4fleet_sim import fleet as simfleet
from ms4fleet_sim.profiles import assign_specs, parse_gpu_spec

ROOT = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).with_name("pyinfra")


@dataclass(frozen=True)
class Fleet:
    target: simfleet.Fleet
    record: simfleet.FleetRecord
    inventory: Path

    @property
    def hosts(self) -> list[str]:
        return [h.name for h in self.record.hosts]

    def container(self, name: str) -> str:
        return self.target.container(name)

    def sh(self, name: str, command: str, check: bool = True) -> str:
        """Run ``command`` as root on a sim host (through Docker, independent of what pyinfra did)."""
        done = dockercli.exec_in(self.container(name), ["sh", "-c", command], check=False)
        out = done.stdout.decode(errors="replace")
        if check and done.returncode != 0:
            raise AssertionError(f"{name}: `{command}` exited {done.returncode}: {out} {done.stderr.decode()}")
        return out

    def down(self) -> None:
        simfleet.down(self.target)
        inventories.remove(self.target)


DRIVER, DRIVER_VERSION = "nvidia-driver-580-open", "580.95.05"
PROVISIONED = (DRIVER, "nvidia-fabricmanager", "cuda-toolkit-13-0", "docker.io", "nvidia-container-toolkit")


@contextmanager
def gpu0_taken(fleet: Fleet, name: str) -> Iterator[None]:
    """A co-tenant process on host ``name`` holding 140 GB of GPU 0 (in the sim's process table) while inside."""
    pid = fleet.sh(name, "setsid sleep 3600 >/dev/null 2>&1 < /dev/null & echo $!").strip()
    entry = {"pid": int(pid), "name": "cotenant", "container_id": None, "gpu_memory_bytes": {"0": 140_000_000_000}}
    fleet.sh(name, f"printf '%s' '{json.dumps(entry)}' > /run/nvidia-sim/procs/cotenant.json")
    try:
        yield
    finally:
        fleet.sh(name, f"rm -f /run/nvidia-sim/procs/cotenant.json; kill {pid}", check=False)


def assert_serving(fleet: Fleet, name: str, replicas: int, gpus: int = 8) -> None:
    """What either engine must leave on a sim host, read through Docker: the simulated driver and fabric
    manager installed and held at one version, that driver loaded, CUDA, Docker and the toolkit installed,
    the services and every replica active, the nvidia runtime in daemon.json, every replica serving."""
    dpkg = fleet.sh(name, "dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n' " + " ".join(PROVISIONED))
    rows = {line.split()[0]: line.split()[1:] for line in dpkg.splitlines()}
    assert rows[DRIVER][1] == "hi" and rows["nvidia-fabricmanager"][1] == "hi", dpkg
    assert rows["nvidia-fabricmanager"][0] == rows[DRIVER][0] == f"{DRIVER_VERSION}-1", dpkg
    assert all(rows[p][1].endswith("i") for p in PROVISIONED), dpkg
    smi = fleet.sh(name, "nvidia-smi --query-gpu=driver_version --format=csv,noheader").split()
    assert smi == [DRIVER_VERSION] * gpus, smi
    units = [f"ms4fleet-vllm-{i}.service" for i in range(replicas)]
    active = fleet.sh(name, f"systemctl is-active nvidia-fabricmanager docker {' '.join(units)}", check=False)
    assert active.split() == ["active"] * (2 + replicas), active
    daemon = json.loads(fleet.sh(name, "cat /etc/docker/daemon.json"))
    assert daemon["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    for port in range(8000, 8000 + replicas):
        answer = json.loads(fleet.sh(name, f"curl -s http://127.0.0.1:{port}/v1/models"))
        assert answer["data"][0]["id"] == "mistral-small-4", (name, port, answer)


def ensure_fleet(name: str, hosts: int, gpus: str = "h200x8", root: Path = ROOT) -> Fleet:
    """Bring fleet ``name`` to ``hosts`` hosts (reused when unchanged) and write its pyinfra inventory."""
    target = simfleet.Fleet(root=root, name=name)
    record = simfleet.up(target, assign_specs([parse_gpu_spec(gpus)], hosts), log=lambda _: None)
    py_path, _ = inventories.write(target, record)
    return Fleet(target, record, py_path)


def ensure_image_archive(path: Path = ROOT / ".sim" / "vllm-image.tar") -> Path:
    """The stand-in image (tagged as the production image) saved to ``path`` for hosts without a registry."""
    return standin_image.save_archive(path)


@dataclass(frozen=True)
class Run:
    rc: int
    seconds: float
    output: str

    def changed_ops(self) -> int:
        """Operations that changed something, from pyinfra's results table (``Changed`` column)."""
        return sum(1 for line in self.output.splitlines() if line.strip().startswith("ms4fleet |") and _changed(line))


def _changed(line: str) -> bool:
    cells = [c for c in line.split("  ") if c.strip()]
    return len(cells) > 2 and cells[2].strip() not in ("-", "0")


def pyinfra(
    fleet: Fleet,
    *args: str,
    archive: Path | None = None,
    verdicts: Path | None = None,
    program: Path = PYINFRA,
    deploy: str = str(ROOT / "deploy.py"),
    cwd: Path = ROOT,
) -> Run:
    """``pyinfra -y INVENTORY deploy.py ARGS``; ``archive``: ship the image as this ``docker save`` archive
    (``--data vllm_image_archive=...``) instead of pulling it from the fleet's registry; ``verdicts``: the
    converged-verdict cache directory to use; ``program`` and ``deploy``: another pyinfra (an installed
    venv's) and deploy (``ms4fleet_pyinfra.deploy``); ``cwd``: where it runs (pyinfra runs that directory's
    ``config.py``)."""
    env = {**os.environ, **({CACHE_ENV: str(verdicts)} if verdicts is not None else {})}
    data = ["--data", f"vllm_image_archive={archive}"] if archive is not None else []
    argv = [str(program), "-y", *data, str(fleet.inventory), deploy, *args]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    return Run(done.returncode, time.monotonic() - started, done.stdout + done.stderr)
