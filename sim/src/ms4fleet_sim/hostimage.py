"""The sim hosts' base image: Debian 12 minbase with systemd, sshd, sudo and python3, built locally.

Nothing is pulled: ``debootstrap`` fetches Debian packages from the machine's configured mirror into a
directory, a few chroot commands make it a server image, and ``docker import`` turns it into
``ms4fleet-sim/host:<recipe hash>``. The image is rebuilt only when this recipe changes.
Docker is deliberately NOT in the image: installing it is the toolkit's job (see aptrepo for the
offline Debian packages that let hosts install it).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ms4fleet_sim import dockercli
from ms4fleet_sim.cache import build_lock, cache_root, image_namespace, recipe_hash

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SIM_USER = "ms4fleet"

PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "sudo",
    "python3",
    "iproute2",
    "iputils-ping",
    "ca-certificates",
    "gnupg",
    "curl",
    "rsync",
    "kmod",
    "pciutils",
    "procps",
    "less",
)

# Units that cannot work in a container (no consoles, no kernel to configure) and only make
# `systemctl is-system-running` report "degraded".
MASKED_UNITS = (
    "getty@tty1.service",
    "console-getty.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-modules-load.service",
    "systemd-remount-fs.service",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "systemd-firstboot.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
)

CUSTOMIZE = f"""
set -eu
useradd --create-home --shell /bin/bash --groups sudo {SIM_USER}
printf '%s ALL=(ALL) NOPASSWD:ALL\\n' {SIM_USER} > /etc/sudoers.d/{SIM_USER}
chmod 0440 /etc/sudoers.d/{SIM_USER}
rm -f /etc/ssh/ssh_host_*
printf 'PasswordAuthentication no\\nKbdInteractiveAuthentication no\\nPermitRootLogin no\\nUseDNS no\\n' \\
    > /etc/ssh/sshd_config.d/ms4fleet-sim.conf
systemctl enable ssh.service
# The simulated hardware replaces lspci with a view that adds the profile's GPUs (see nvsim/lspci.py).
dpkg-divert --local --rename --divert /usr/bin/lspci.real --add /usr/bin/lspci
# Debian's runc, once installed, lands beside a shim that lowers rlimits the machine cannot grant (nvsim/runc_shim.py).
dpkg-divert --local --rename --divert /usr/sbin/runc.real --add /usr/sbin/runc
systemctl mask {" ".join(MASKED_UNITS)}
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/* /var/log/*.log
"""

IMPORT_CHANGES = (
    'CMD ["/lib/systemd/systemd"]',
    "ENV container=docker",
)


def image_tag() -> str:
    """The image reference for the current recipe."""
    digest = recipe_hash("host", SUITE, MIRROR, PACKAGES, MASKED_UNITS, CUSTOMIZE, IMPORT_CHANGES)
    return f"{image_namespace()}/host:{digest}"


def _check_tools() -> None:
    missing = [tool for tool in ("debootstrap", "chroot") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"building the sim host image needs {', '.join(missing)}: run scripts/ensure-docker.sh")


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:] or proc.stdout.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{what} failed:\n{tail}")


def bootstrap_rootfs(dest: Path, packages: tuple[str, ...]) -> None:
    """``debootstrap --variant=minbase`` into ``dest``, reusing downloaded .debs between builds."""
    _check_tools()
    debs = cache_root() / "debootstrap-debs"
    debs.mkdir(exist_ok=True)
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            f"--cache-dir={debs}",
            SUITE,
            str(dest),
            MIRROR,
        ],
        "debootstrap",
    )


def import_rootfs(rootfs: Path, tag: str, changes: tuple[str, ...], labels: dict[str, str]) -> None:
    """``tar -C rootfs -c . | docker import`` with the given Dockerfile changes and labels."""
    args = ["import"]
    for change in changes:
        args += ["--change", change]
    for key, value in labels.items():
        args += ["--change", f"LABEL {key}={value}"]
    binary = dockercli.docker_binary()
    with subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        proc = subprocess.run([binary, *args, "-", tag], stdin=tar.stdout, capture_output=True, check=False)
    if tar.returncode != 0 or proc.returncode != 0:
        raise RuntimeError(f"docker import {tag} failed: {proc.stderr.decode(errors='replace').strip()}")


def current_tag() -> str:
    """A stable name for the newest host image (``ms4fleet-sim/host:current``), for Molecule platforms."""
    return f"{image_namespace()}/host:current"


def _build(tag: str, log: list[str] | None) -> None:
    if log is not None:
        log.append(f"building {tag} (debootstrap {SUITE}, a few minutes)")
    with tempfile.TemporaryDirectory(dir=cache_root(), prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        bootstrap_rootfs(rootfs, PACKAGES)
        _run(["chroot", str(rootfs), "/bin/sh", "-c", CUSTOMIZE], "customizing the host rootfs")
        labels = {dockercli.LABEL: "host-image", dockercli.RECIPE_LABEL: tag.split(":")[1]}
        import_rootfs(rootfs, tag, IMPORT_CHANGES, labels)


def ensure_host_image(log: list[str] | None = None) -> str:
    """Build the host image unless the current recipe's tag already exists; return the tag."""
    tag = image_tag()
    if not dockercli.image_exists(tag):
        with build_lock("host-image"):
            if not dockercli.image_exists(tag):
                _build(tag, log)
    dockercli.run(["tag", tag, current_tag()])
    return tag
