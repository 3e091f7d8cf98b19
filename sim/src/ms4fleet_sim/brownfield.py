"""Brownfield host profiles: a sim host made to look like a GPU server someone else set up before ms4fleet.

``apply(record, host, profile)`` turns an up, bare sim host into one of ``PROFILES``:

- ``runfile``: the 580 driver from NVIDIA's runfile: its files under /usr/lib/x86_64-linux-gnu and /usr/bin,
  the module in ``/lib/modules/<kernel>/kernel/drivers/video`` owned by no package, ``nvidia-uninstall`` and
  the installer log;
- ``dkms``: the 580 open driver built by DKMS (``nvidia-dkms-580-open``) for the running kernel and for a
  pending one (``linux-image-<kernel>`` installed, boots next; its headers are installed, so DKMS built it);
- ``dkms-nomodule``: the 580 proprietary driver (``nvidia-driver-580``, ``nvidia-dkms-580``) built by DKMS, and
  a pending kernel whose headers are not installed: no module for the kernel that boots next;
- ``docker-ce``: Docker from Docker's repository (a package named ``docker-ce``, Conflicts: docker.io) with
  its own daemon.json;
- ``secure-boot``: Secure Boot on (``mokutil --sb-state`` says so) and no driver;
- ``apt-older``: the 580 open driver and the fabric manager from NVIDIA's repository at an older build
  (``OLDER_DRIVER``), loaded and held (``apt-mark hold``): a deploy of the configured 580.95.05 upgrades them.
  Applied again to a deployed host, it puts them back (a downgrade past the hold and the pin).

Kernels are Ubuntu's names (``linux-image-6.8.0-45-generic``); packages are real .debs installed with dpkg, so
``dpkg-query -S`` and ``dkms status`` answer as on such a host. A profile with kernels gets the sim's ``modinfo``
(``nvsim.modinfo``): the module of the kernel the host booted (``nvsim.kernel``) answers for ``nvidia``.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from ms4fleet_sim import dockercli
from ms4fleet_sim.fleet import FleetRecord, HostRecord
from ms4fleet_sim.hostfiles import NVSIM_ROOT, launcher
from ms4fleet_sim.packages import DRIVERS, OLDER_DRIVER, DriverBranch, Package, driver
from ms4fleet_sim.ssh import wait_until_ready

PROFILES = ("runfile", "dkms", "dkms-nomodule", "docker-ce", "secure-boot", "apt-older")
RUNNING_KERNEL = "6.8.0-45-generic"
PENDING_KERNEL = "6.8.0-51-generic"
DOCKER_CE_VERSION = "5:28.1.1-1~debian.12~bookworm"
# What the docker-ce host's owner put in daemon.json: a deploy merges its keys into it.
DOCKER_CE_DAEMON_JSON = {"log-driver": "json-file", "log-opts": {"max-size": "10m"}}
MODINFO = "/usr/local/sbin/modinfo"

DKMS_TOOL = r"""#!/bin/sh
# dkms (ms4fleet sim): `status`, `autoinstall [-k KERNEL]`; a module is built only where the kernel's headers are.
set -e
src=$(ls -d /usr/src/nvidia-*/ 2>/dev/null | head -n 1)
build() {
    [ -n "$src" ] && [ -d "/lib/modules/$1/build" ] || return 0
    mkdir -p "/lib/modules/$1/updates/dkms"
    cp "${src}nvidia.json" "/lib/modules/$1/updates/dkms/nvidia.ko"
}
case "$1" in
status)
    for f in /lib/modules/*/updates/dkms/nvidia.ko; do
        [ -f "$f" ] || continue
        k=${f#/lib/modules/}; k=${k%%/*}
        v=$(sed -n 's/.*"version": "\([^"]*\)".*/\1/p' "$f")
        echo "nvidia/$v, $k, x86_64: installed"
    done ;;
autoinstall)
    if [ "$2" = -k ]; then build "$3"; else for d in /lib/modules/*/; do d=${d%/}; build "${d##*/}"; done; fi ;;
*) echo "dkms (ms4fleet sim): $1 is not simulated" >&2; exit 3 ;;
esac
"""
KERNEL_HOOK = """#!/bin/sh
# ms4fleet sim: DKMS builds its modules for a newly installed kernel.
exec /usr/sbin/dkms autoinstall -k "$1"
"""
# Debian's and Ubuntu's kernel packages run these hooks with the kernel's version.
RUN_KERNEL_HOOKS = '[ "$1" = configure ] && run-parts --arg={kernel} /etc/kernel/postinst.d || true\n'
MOKUTIL = """#!/bin/sh
# mokutil (ms4fleet sim): Secure Boot is on.
[ "$1" = --sb-state ] && echo "SecureBoot enabled" && exit 0
exit 1
"""


def _module(info: DriverBranch, flavor: str = "open") -> str:
    license_ = "Dual MIT/GPL" if flavor == "open" else "NVIDIA"
    return json.dumps({"version": info.version, "flavor": flavor, "license": license_}) + "\n"


def linux_image(kernel: str) -> Package:
    pkg = Package(f"linux-image-{kernel}", "6.8.0-1", f"Signed kernel image {kernel}")
    pkg.add(f"/boot/vmlinuz-{kernel}", f"ms4fleet sim kernel {kernel}\n")
    pkg.add(f"/lib/modules/{kernel}/modules.order", "")
    pkg.scripts["postinst"] = RUN_KERNEL_HOOKS.format(kernel=kernel)
    return pkg


def linux_headers(kernel: str) -> Package:
    pkg = Package(f"linux-headers-{kernel}", "6.8.0-1", f"Linux kernel headers for {kernel}")
    pkg.add(f"/usr/src/linux-headers-{kernel}/Makefile", "# ms4fleet sim\n")
    pkg.add(f"/lib/modules/{kernel}/build/Makefile", "# ms4fleet sim\n")
    return pkg


def dkms() -> Package:
    pkg = Package("dkms", "3.0.11-1ubuntu13", "Dynamic Kernel Module System")
    pkg.add("/usr/sbin/dkms", DKMS_TOOL, 0o755)
    pkg.add("/etc/kernel/postinst.d/dkms", KERNEL_HOOK, 0o755)
    return pkg


def nvidia_dkms(info: DriverBranch, flavor: str) -> Package:
    name = "nvidia-dkms-580-open" if flavor == "open" else "nvidia-dkms-580"
    pkg = Package(name, f"{info.version}-1", f"NVIDIA DKMS package ({flavor} kernel module)", depends=["dkms"])
    pkg.add(f"/usr/src/nvidia-{info.version}/nvidia.json", _module(info, flavor))
    pkg.scripts["postinst"] = '[ "$1" = configure ] && /usr/sbin/dkms autoinstall || true\n'
    return pkg


def _docker_ce(debian_dir: Path, out: Path) -> Path:
    """Debian's docker.io .deb renamed docker-ce as Docker's repository names it (a real dockerd that
    conflicts with docker.io, as docker-ce does)."""
    deb = next(debian_dir.glob("docker.io_*_amd64.deb"))
    tree = out / "docker-ce"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True, capture_output=True)
    control = tree / "DEBIAN" / "control"
    lines = [line for line in control.read_text().splitlines() if not line.startswith(("Conflicts:", "Replaces:"))]
    fields = {"Package": "docker-ce", "Version": DOCKER_CE_VERSION}
    lines = [f"{line.split(':', 1)[0]}: {fields[line.split(':', 1)[0]]}" if line.split(":", 1)[0] in fields else line
             for line in lines]  # fmt: skip
    lines.insert(2, "Conflicts: docker.io, docker-engine")
    control.write_text("\n".join(lines) + "\n")
    built = out / "docker-ce.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(built)], check=True, capture_output=True)
    return built


def _sh(container: str, script: str) -> str:
    done = dockercli.exec_in(container, ["sh", "-ec", script], check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{container}: profile step failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return done.stdout.decode(errors="replace")


def _write(container: str, path: str, content: str, mode: int = 0o644) -> None:
    script = f'mkdir -p "$(dirname {path})" && cat > {path} && chmod {mode:o} {path}'
    dockercli.exec_in(container, ["sh", "-ec", script], input_bytes=content.encode())


def _copy(container: str, debs: list[Path]) -> list[str]:
    names = []
    for deb in debs:
        dockercli.run(["cp", str(deb), f"{container}:/tmp/{deb.name}"])
        names.append(f"/tmp/{deb.name}")
    return names


def _boot(container: str) -> None:
    """Load the module of the kernel that boots now (the boot unit again) and forget the packages' reboot
    request, as a reboot into it would: the profile's host has been running its driver since."""
    _sh(
        container,
        "rm -f /run/nvidia-sim/module.json /var/run/reboot-required /var/run/reboot-required.pkgs; "
        "systemctl restart nvidia-sim-kernel.service",
    )


def _kernel_files(container: str) -> None:
    _write(container, MODINFO, launcher("modinfo"), 0o755)


def _install(container: str, debs: list[Path]) -> None:
    paths = " ".join(_copy(container, debs))
    _sh(
        container,
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {paths}; rm -f {paths}",
    )


def apply(record: FleetRecord, host: HostRecord, profile: str) -> None:
    """Make the bare, up host ``host`` the brownfield ``profile``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown brownfield profile {profile!r}: one of {', '.join(PROFILES)}")
    container = host.container
    repo = Path(record.repo_dir)
    with tempfile.TemporaryDirectory(prefix="ms4fleet-brownfield-") as tmp:
        out = Path(tmp)

        def build(*pkgs: Package) -> list[Path]:
            return [pkg.build(out) for pkg in pkgs]

        if profile == "secure-boot":
            _write(container, "/usr/bin/mokutil", MOKUTIL, 0o755)
        elif profile == "docker-ce":
            _write(container, "/etc/docker/daemon.json", json.dumps(DOCKER_CE_DAEMON_JSON) + "\n")
            _sh(container, "apt-get update -q")
            _install(container, [_docker_ce(repo / "debian", out)])
        elif profile == "runfile":
            _apply_runfile(container, repo, build)
        elif profile == "apt-older":
            _apply_older(container, repo)
        else:
            nomodule = profile == "dkms-nomodule"
            info, flavor = DRIVERS["580"], "proprietary" if nomodule else "open"
            _sh(container, "apt-get update -q")
            _kernel_files(container)
            _install(container, build(linux_headers(RUNNING_KERNEL), linux_image(RUNNING_KERNEL), dkms()))
            _install(container, build(nvidia_dkms(info, flavor), driver("580", flavor)))
            _boot(container)
            # The kernel update: its image, and its headers only where DKMS could build for it.
            pending = (
                [linux_image(PENDING_KERNEL)]
                if nomodule
                else [linux_headers(PENDING_KERNEL), linux_image(PENDING_KERNEL)]
            )
            _install(container, build(*pending))
    wait_until_ready(record.endpoint(host))


def _apply_older(container: str, repo: Path) -> None:
    names = ("nvidia-driver-580-open", "nvidia-fabricmanager")
    debs = [next((repo / "nvidia").glob(f"{name}_{OLDER_DRIVER.version}-1_amd64.deb")) for name in names]
    paths = " ".join(_copy(container, debs))
    _sh(
        container,
        f"apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        f"--allow-downgrades --allow-change-held-packages {paths}; rm -f {paths}; apt-mark hold {' '.join(names)}",
    )
    _boot(container)


def _apply_runfile(container: str, repo: Path, build: Callable[..., list[Path]]) -> None:
    info = DRIVERS["580"]
    image = build(linux_image(RUNNING_KERNEL))
    _sh(container, "apt-get update -q")
    _kernel_files(container)
    _install(container, image)
    deb = next((repo / "nvidia").glob(f"nvidia-driver-580-open_{info.version}-1_amd64.deb"))
    (staged,) = _copy(container, [deb])
    lib = "/usr/lib/x86_64-linux-gnu"
    module_dir = f"/lib/modules/{RUNNING_KERNEL}/kernel/drivers/video"
    files = [f"{lib}/libnvidia-ml.so.{info.version}", f"{lib}/libcuda.so.{info.version}", f"{module_dir}/nvidia.ko"]
    uninstall = (
        "#!/bin/sh\n# nvidia-uninstall (ms4fleet sim): removes what the runfile installed.\n"
        f"rm -rf {NVSIM_ROOT}/driver.json {NVSIM_ROOT}/kernel-module.json /usr/bin/nvidia-smi "
        f"/usr/bin/nvidia-persistenced {' '.join(files)} {lib}/libnvidia-ml.so.1 {lib}/libcuda.so.1 "
        "/var/log/nvidia-installer.log /usr/bin/nvidia-uninstall\n"
    )
    _sh(
        container,
        # The runfile puts the driver's files in place without dpkg: the same tools, no package owns them.
        f"dpkg-deb --fsys-tarfile {staged} | tar -x --keep-directory-symlink --no-overwrite-dir -C /\n"
        f"rm -f {staged}\n"
        f"printf 'ms4fleet sim runfile library\\n' | tee {files[0]} > {files[1]}\n"
        f"ln -sf libnvidia-ml.so.{info.version} {lib}/libnvidia-ml.so.1\n"
        f"ln -sf libcuda.so.{info.version} {lib}/libcuda.so.1\n"
        f"printf 'nvidia-installer log\\ninstalling NVIDIA driver {info.version}\\n' > /var/log/nvidia-installer.log\n"
        "systemctl daemon-reload\n",
    )
    _write(container, f"{module_dir}/nvidia.ko", _module(info))
    _write(container, "/usr/bin/nvidia-uninstall", uninstall, 0o755)
    _boot(container)
