"""The simulated NVIDIA packages: real .deb files (dpkg-deb) named and versioned like NVIDIA's.

Their payload is the ``ms4fleet_sim.nvsim`` code (``nvidia-smi``, fabric manager, ``nvidia-ctk``, the
container runtime and hook), installed under /usr/lib/nvidia-sim with small launchers on PATH; their
maintainer scripts have the side effects the toolkit depends on (a driver install requests a reboot,
CUDA registers the /usr/local/cuda alternative). See docs/simulation.md for the full list.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ms4fleet_sim.hostfiles import NVSIM_ROOT, launcher, nvsim_source

MAINTAINER = "ms4fleet sim <sim@ms4fleet.invalid>"
NVSIM_PKG_DIR = f"{NVSIM_ROOT}/ms4fleet_sim/nvsim"


@dataclass(frozen=True)
class DriverBranch:
    version: str
    cuda: str  # the CUDA version nvidia-smi reports for this driver


DRIVERS = {
    "580": DriverBranch("580.95.05", "13.0"),
    "570": DriverBranch("570.195.03", "12.8"),
}
# A fabric manager build that does not match any driver above: installing it next to the 580 driver is the
# version mismatch the real fabric manager refuses to run with.
MISMATCHED_FABRICMANAGER = "580.82.07"
# An older build of the 580 open driver (and of its fabric manager), also in the repository: a host held at it
# is one a deploy of the configured 580 build upgrades.
OLDER_DRIVER = DriverBranch("580.82.07", "13.0")
CONTAINER_TOOLKIT_VERSION = "1.18.0"
CUDA_TOOLKITS = {"12-8": "12.8.93", "13-0": "13.0.88"}
NVLSM_VERSION = "2025.06.5"


@dataclass
class Package:
    """One binary package: control fields, files and maintainer scripts."""

    name: str
    version: str
    description: str
    depends: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    replaces: list[str] = field(default_factory=list)
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    scripts: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, content: str, mode: int = 0o644) -> None:
        self.files[path] = (content, mode)

    def add_module(self, module: str) -> None:
        self.add(f"{NVSIM_PKG_DIR}/{module}.py", nvsim_source(f"{module}.py"))

    def add_tool(self, path: str, module: str) -> None:
        self.add_module(module)
        self.add(path, launcher(module), 0o755)

    def control(self) -> str:
        fields = [
            ("Package", self.name),
            ("Version", self.version),
            ("Architecture", "amd64"),
            ("Maintainer", MAINTAINER),
            ("Depends", ", ".join(self.depends)),
            ("Provides", ", ".join(self.provides)),
            ("Conflicts", ", ".join(self.conflicts)),
            ("Replaces", ", ".join(self.replaces)),
            ("Section", "non-free/libs"),
            ("Priority", "optional"),
            ("Description", f"{self.description} (ms4fleet sim)\n Simulated package: see ms4fleet docs/simulation.md."),
        ]
        return "".join(f"{key}: {value}\n" for key, value in fields if value)

    def build(self, out_dir: Path) -> Path:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "DEBIAN").mkdir()
            (root / "DEBIAN" / "control").write_text(self.control(), encoding="utf-8")
            for script, body in self.scripts.items():
                path = root / "DEBIAN" / script
                path.write_text("#!/bin/sh\nset -e\n" + body, encoding="utf-8")
                path.chmod(0o755)
            for dest, (content, mode) in self.files.items():
                path = root / dest.lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content, encoding="utf-8")
                path.chmod(mode)
            for directory in [p for p in root.rglob("*") if p.is_dir()]:
                directory.chmod(0o755)
            deb = out_dir / f"{self.name}_{self.version}_amd64.deb"
            proc = subprocess.run(
                ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
                capture_output=True,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"dpkg-deb {self.name}: {proc.stderr.decode(errors='replace')}")
        return deb


PERSISTENCED_UNIT = """[Unit]
Description=NVIDIA Persistence Daemon
Wants=syslog.target

[Service]
Type=forking
ExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --no-persistence-mode --verbose
ExecStopPost=/bin/rm -rf /var/run/nvidia-persistenced

[Install]
WantedBy=multi-user.target
"""

FABRICMANAGER_UNIT = """[Unit]
Description=NVIDIA fabric manager service
After=network-online.target
Requires=network-online.target

[Service]
User=root
PrivateTmp=false
Type=forking
TimeoutStartSec=240
ExecStart=/usr/bin/nv-fabricmanager -c /usr/share/nvidia/nvswitch/fabricmanager.cfg
LimitCORE=infinity

[Install]
WantedBy=multi-user.target
"""

FABRICMANAGER_CFG = """# Fabric Manager configuration (ms4fleet sim)
LOG_LEVEL=4
LOG_FILE_NAME=/var/log/fabricmanager.log
DAEMONIZE=1
BIND_INTERFACE_IP=127.0.0.1
STARTING_TCP_PORT=16000
FABRIC_MODE=0
"""

REBOOT_REQUIRED = """
case "$1" in
configure)
    touch /var/run/reboot-required
    echo "{name}" >> /var/run/reboot-required.pkgs
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
    systemctl enable nvidia-persistenced.service >/dev/null 2>&1 || true
    ;;
esac
"""

CONTAINER_RUNTIME_CONFIG = """#accept-nvidia-visible-devices-as-volume-mounts = false
#accept-nvidia-visible-devices-envvar-when-unprivileged = true
disable-require = false
supported-driver-capabilities = "compat32,compute,display,graphics,ngx,utility,video"

[nvidia-container-cli]
environment = []
ldconfig = "@/sbin/ldconfig.real"
load-kmods = true

[nvidia-container-runtime]
log-level = "info"
mode = "auto"
runtimes = ["runc", "crun"]

[nvidia-container-runtime-hook]
path = "nvidia-container-runtime-hook"
skip-mode-detection = false

[nvidia-ctk]
path = "nvidia-ctk"
"""


def driver(branch: str, flavor: str, info: DriverBranch | None = None) -> Package:
    """``info``: a build other than the branch's own (``OLDER_DRIVER``)."""
    info = info or DRIVERS[branch]
    name = f"nvidia-driver-{branch}-open" if flavor == "open" else f"nvidia-driver-{branch}"
    kind = "open kernel modules" if flavor == "open" else "proprietary kernel modules"
    pkg = Package(
        name=name,
        version=f"{info.version}-1",
        description=f"NVIDIA driver metapackage, branch {branch}, {kind}",
        depends=["python3"],
        provides=["nvidia-driver-binary", f"nvidia-kernel-{'open-' if flavor == 'open' else ''}{branch}"],
        conflicts=["nvidia-driver-binary"],
        replaces=["nvidia-driver-binary"],
        scripts={"postinst": REBOOT_REQUIRED.format(name=name)},
    )
    module = {"version": info.version, "flavor": flavor, "license": "Dual MIT/GPL" if flavor == "open" else "NVIDIA"}
    pkg.add(f"{NVSIM_ROOT}/kernel-module.json", json.dumps(module) + "\n")
    pkg.add(f"{NVSIM_ROOT}/driver.json", json.dumps({"version": info.version, "cuda_version": info.cuda}) + "\n")
    pkg.add_tool("/usr/bin/nvidia-smi", "smi")
    pkg.add_tool("/usr/bin/nvidia-persistenced", "persistenced")
    pkg.add("/lib/systemd/system/nvidia-persistenced.service", PERSISTENCED_UNIT)
    return pkg


def fabricmanager(name: str, version: str) -> Package:
    pkg = Package(
        name=name,
        version=f"{version}-1",
        description="Fabric Manager for NVSwitch based systems",
        depends=["python3"],
        provides=["nvidia-fabricmanager-binary"],
        conflicts=["nvidia-fabricmanager-binary"],
        replaces=["nvidia-fabricmanager-binary"],
        scripts={"postinst": "if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n"},
    )
    pkg.add(f"{NVSIM_ROOT}/fabricmanager.json", json.dumps({"version": version}) + "\n")
    pkg.add_tool("/usr/bin/nv-fabricmanager", "fabricmanager")
    pkg.add("/lib/systemd/system/nvidia-fabricmanager.service", FABRICMANAGER_UNIT)
    pkg.add("/usr/share/nvidia/nvswitch/fabricmanager.cfg", FABRICMANAGER_CFG)
    return pkg


def nvlsm() -> Package:
    pkg = Package(
        name="nvlsm",
        version=f"{NVLSM_VERSION}-1",
        description="NVLink Subnet Manager for NVLink5 (Blackwell) NVSwitch systems",
        depends=["python3"],
    )
    pkg.add("/usr/bin/nvlsm", f"#!/bin/sh\necho 'nvlsm {NVLSM_VERSION} (ms4fleet sim)'\n", 0o755)
    return pkg


def cuda_toolkit(series: str, version: str) -> Package:
    short = series.replace("-", ".")
    prefix = f"/usr/local/cuda-{short}"
    priority = series.replace("-", "")
    pkg = Package(
        name=f"cuda-toolkit-{series}",
        version=f"{version}-1",
        description=f"CUDA Toolkit {short} meta-package",
        scripts={
            "postinst": f"update-alternatives --install /usr/local/cuda cuda {prefix} {priority}\n",
            "prerm": f'[ "$1" = upgrade ] || update-alternatives --remove cuda {prefix}\n',
        },
    )
    pkg.add(f"{prefix}/version.json", json.dumps({"cuda": {"name": "CUDA SDK", "version": version}}) + "\n")
    pkg.add(
        f"{prefix}/bin/nvcc",
        "#!/bin/sh\n"
        "echo 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
        f"echo 'Cuda compilation tools, release {short}, V{version}'\n",
        0o755,
    )
    return pkg


def container_toolkit() -> Package:
    pkg = Package(
        name="nvidia-container-toolkit",
        version=f"{CONTAINER_TOOLKIT_VERSION}-1",
        description="NVIDIA Container toolkit",
        depends=["python3"],
        provides=["nvidia-container-toolkit-base", "libnvidia-container-tools"],
    )
    pkg.add_tool("/usr/bin/nvidia-ctk", "ctk")
    pkg.add_tool("/usr/bin/nvidia-container-runtime", "runtime")
    pkg.add_tool("/usr/bin/nvidia-container-runtime-hook", "hook")
    pkg.add("/etc/nvidia-container-runtime/config.toml", CONTAINER_RUNTIME_CONFIG)
    return pkg


def all_packages() -> list[Package]:
    pkgs = [driver("580", "open"), driver("570", "open"), driver("580", "proprietary")]
    pkgs.append(driver("580", "open", OLDER_DRIVER))
    pkgs += [fabricmanager(f"nvidia-fabricmanager-{b}", info.version) for b, info in DRIVERS.items()]
    pkgs.append(fabricmanager("nvidia-fabricmanager-580", MISMATCHED_FABRICMANAGER))
    pkgs.append(fabricmanager("nvidia-fabricmanager", DRIVERS["580"].version))
    pkgs.append(fabricmanager("nvidia-fabricmanager", OLDER_DRIVER.version))
    pkgs.append(nvlsm())
    pkgs += [cuda_toolkit(series, version) for series, version in CUDA_TOOLKITS.items()]
    pkgs.append(container_toolkit())
    return pkgs


def recipe() -> list[str]:
    """Everything that changes the built packages, for the repository's cache key."""
    return [pkg.control() + json.dumps(pkg.files, sort_keys=True) + json.dumps(pkg.scripts) for pkg in all_packages()]


def build_all(out_dir: Path) -> list[Path]:
    return [pkg.build(out_dir) for pkg in all_packages()]
