"""Files a sim host gets before its first boot: the simulated hardware, its SSH identity and apt sources.

They are written into the created container as one tar stream (``docker cp -a -``), so they are part of
the host's disk and survive reboots. Everything the simulated NVIDIA *packages* install comes from the
sim apt repository instead (see ``packages``).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from importlib import resources

from ms4fleet_sim.cache import package_sources_hash, recipe_hash
from ms4fleet_sim.hostimage import SIM_USER

SIM_USER_UID = 1000
NVSIM_ROOT = "/usr/lib/nvidia-sim"
KERNEL_UNIT = "nvidia-sim-kernel.service"

# The simulated hardware's code: what any sim host has before a package is installed.
HARDWARE_MODULES = (
    "state.py",
    "lspci.py",
    "kernel.py",
    "daemon.py",
    "runc_shim.py",
    "allreduce.py",
    "nvml.py",
    "modinfo.py",
)
# nvidia-ml-py as an operator installs it (Debian's python3 reads dist-packages): the simulated NVML, whose
# library side comes with the simulated driver package. A test removes it for a host without nvidia-ml-py.
PYNVML = "/usr/lib/python3/dist-packages/pynvml.py"


def launcher(module: str) -> str:
    """A ``#!/usr/bin/python3`` script that runs ``ms4fleet_sim.nvsim.<module>.main`` from NVSIM_ROOT."""
    return (
        "#!/usr/bin/python3\n"
        "import sys\n"
        f"sys.path.insert(0, {NVSIM_ROOT!r})\n"
        f"from ms4fleet_sim.nvsim.{module} import main\n"
        "sys.exit(main())\n"
    )


def pynvml_module() -> str:
    """``pynvml.py`` of a sim host: ``ms4fleet_sim.nvsim.nvml`` from NVSIM_ROOT under pynvml's name."""
    return (
        '"""nvidia-ml-py on an ms4fleet sim host: the simulated NVML (ms4fleet_sim.nvsim.nvml)."""\n'
        "import sys\n"
        f"sys.path.insert(0, {NVSIM_ROOT!r})\n"
        "from ms4fleet_sim.nvsim.nvml import *  # noqa: F401,F403\n"
    )


def nvsim_source(name: str) -> str:
    return resources.files("ms4fleet_sim.nvsim").joinpath(name).read_text(encoding="utf-8")


KERNEL_UNIT_TEXT = f"""[Unit]
Description=Load the simulated NVIDIA kernel module (ms4fleet sim hardware)
After=local-fs.target
Before=multi-user.target docker.service nvidia-persistenced.service nvidia-fabricmanager.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={NVSIM_ROOT}/bin/nvidia-sim-kernel

[Install]
WantedBy=multi-user.target
"""


@dataclass
class TarBuilder:
    """Collects files and directories and renders them as a tar stream."""

    entries: list[tuple[tarfile.TarInfo, bytes | None]] = field(default_factory=list)

    def directory(self, path: str, mode: int = 0o755, uid: int = 0) -> None:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, uid, uid
        self.entries.append((info, None))

    def file(self, path: str, data: str | bytes, mode: int = 0o644, uid: int = 0) -> None:
        blob = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode, info.uid, info.gid = len(blob), mode, uid, uid
        self.entries.append((info, blob))

    def symlink(self, path: str, target: str) -> None:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.type, info.linkname = tarfile.SYMTYPE, target
        self.entries.append((info, None))

    def render(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for info, blob in self.entries:
                tar.addfile(info, io.BytesIO(blob) if blob is not None else None)
        return buffer.getvalue()


def hardware_hash() -> str:
    """Changes when the simulated hardware a host gets at creation changes."""
    return recipe_hash(package_sources_hash("nvsim"), KERNEL_UNIT_TEXT, HARDWARE_MODULES, pynvml_module())


def add_hardware(tar: TarBuilder, profile: dict[str, object]) -> None:
    """The simulated GPUs: profile, lspci view, boot-time module load."""
    tar.directory("/etc/nvidia-sim")
    tar.file("/etc/nvidia-sim/profile.json", json.dumps(profile, indent=2) + "\n")
    for directory in (
        NVSIM_ROOT,
        f"{NVSIM_ROOT}/bin",
        f"{NVSIM_ROOT}/ms4fleet_sim",
        f"{NVSIM_ROOT}/ms4fleet_sim/nvsim",
    ):
        tar.directory(directory)
    tar.file(
        f"{NVSIM_ROOT}/ms4fleet_sim/__init__.py", resources.files("ms4fleet_sim").joinpath("__init__.py").read_text()
    )
    tar.file(f"{NVSIM_ROOT}/ms4fleet_sim/nvsim/__init__.py", nvsim_source("__init__.py"))
    for module in HARDWARE_MODULES:
        tar.file(f"{NVSIM_ROOT}/ms4fleet_sim/nvsim/{module}", nvsim_source(module))
    # The real binaries are diverted to /usr/bin/lspci.real and /usr/sbin/runc.real in the host image.
    tar.file("/usr/bin/lspci", launcher("lspci"), mode=0o755)
    tar.file("/usr/sbin/runc", launcher("runc_shim"), mode=0o755)
    tar.file(f"{NVSIM_ROOT}/bin/nvidia-sim-kernel", launcher("kernel"), mode=0o755)
    tar.file(f"{NVSIM_ROOT}/bin/nvidia-sim-allreduce", launcher("allreduce"), mode=0o755)
    tar.directory(PYNVML.rsplit("/", 1)[0])
    tar.file(PYNVML, pynvml_module())
    tar.file(f"/etc/systemd/system/{KERNEL_UNIT}", KERNEL_UNIT_TEXT)
    tar.symlink(f"/etc/systemd/system/multi-user.target.wants/{KERNEL_UNIT}", f"/etc/systemd/system/{KERNEL_UNIT}")


def add_identity(tar: TarBuilder, host_key: bytes, host_key_pub: str, authorized_key: str) -> None:
    tar.file("/etc/ssh/ssh_host_ed25519_key", host_key, mode=0o600)
    tar.file("/etc/ssh/ssh_host_ed25519_key.pub", host_key_pub + "\n")
    tar.directory(f"/home/{SIM_USER}/.ssh", mode=0o700, uid=SIM_USER_UID)
    tar.file(f"/home/{SIM_USER}/.ssh/authorized_keys", authorized_key + "\n", mode=0o600, uid=SIM_USER_UID)


def add_apt_sources(tar: TarBuilder, debian_url: str, keyring: bytes) -> None:
    """Point the host's Debian archive at the sim's offline mirror (see aptrepo)."""
    tar.file("/usr/share/keyrings/ms4fleet-sim-archive.gpg", keyring)
    tar.file(
        "/etc/apt/sources.list",
        "# Offline Debian mirror of the ms4fleet sim (the packages hosts may install, pre-downloaded)\n"
        f"deb [signed-by=/usr/share/keyrings/ms4fleet-sim-archive.gpg] {debian_url} ./\n",
    )
