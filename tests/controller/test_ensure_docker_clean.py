"""``scripts/ensure-docker.sh`` on a fresh machine that ships only a Docker *client*, as issue 13 found one:
a clean Debian 12 container (debootstrap minbase, no systemd as PID 1) holding nothing but the client binary
this machine has (/usr/local/bin/docker). The script must see that no daemon exists, install docker.io and
the controller's programs with apt from Debian's mirror, start dockerd and get an answer from it; run again,
it changes nothing and returns at once. The same machine's python3 cannot create a venv (Debian ships that
apart): ``scripts/ensure-python-venv.sh`` installs it."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ms4fleet.controller import PROGRAMS
from ms4fleet_sim import dockercli, hostimage
from ms4fleet_sim.cache import build_lock, cache_root, image_namespace, recipe_hash
from ms4fleet_sim.fleet import SYSTEMD_FLAGS

pytestmark = [pytest.mark.sim, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = "ms4fleet-doctor-clean-debian"
# The client some machine images ship without a daemon (static, 28.2 here); any docker client otherwise.
CLIENT = Path("/usr/local/bin/docker")
# Debian's own container images forbid starting services from package scripts (policy-rc.d exit 101): so here,
# so that the daemon the test sees answering is the one the script started.
CUSTOMIZE = (
    "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d"
    " && apt-get clean && rm -rf /var/lib/apt/lists/*"
)
IMPORT_CHANGES = ('CMD ["sleep", "infinity"]',)
# What the README asks of a fresh machine (Python 3.11+ and make) and nothing more.
BASE = ("python3", "make")
# What the script must have installed (a docker client alone is not docker.io).
PACKAGES = (
    "docker.io", "debootstrap", "dpkg-dev", "gnupg", "rsync", "openssh-client", "curl", "procps", "tmux",
    "chromium-headless-shell",
)  # fmt: skip


def clean_debian_image() -> str:
    """Debian 12 minbase with python3 and make (plus policy-rc.d), built once per recipe and cached."""
    digest = recipe_hash("clean-debian", hostimage.SUITE, hostimage.MIRROR, BASE, CUSTOMIZE, IMPORT_CHANGES)
    tag = f"{image_namespace()}/clean-debian:{digest}"
    with build_lock("clean-debian-image"):
        if not dockercli.image_exists(tag):
            with tempfile.TemporaryDirectory(dir=cache_root(), prefix="rootfs-") as tmp:
                rootfs = Path(tmp) / "rootfs"
                hostimage.bootstrap_rootfs(rootfs, BASE)
                subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", CUSTOMIZE], check=True, capture_output=True)
                labels = {dockercli.LABEL: "clean-debian-image", dockercli.RECIPE_LABEL: digest}
                hostimage.import_rootfs(rootfs, tag, IMPORT_CHANGES, labels)
    return tag


def sh(command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    docker = dockercli.docker_binary()
    return subprocess.run(
        [docker, "exec", CONTAINER, "sh", "-c", command], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def machine() -> Iterator[str]:
    """The clean container, running (PID 1 sleeps: no init, like the CI machine), with the client copied in."""
    image = clean_debian_image()
    dockercli.run(["rm", "-f", "-v", CONTAINER], check=False)
    # The flags the sim hosts use for systemd are the ones a nested dockerd needs (caps, cgroups, /run tmpfs).
    flags = [flag for flag in SYSTEMD_FLAGS if flag not in ("--stop-signal", "SIGRTMIN+3")]
    dockercli.run(["run", "-d", "--name", CONTAINER, "--label", f"{dockercli.LABEL}=doctor", *flags, image])
    client = CLIENT if CLIENT.exists() else Path(dockercli.docker_binary())
    dockercli.run(["cp", str(client), f"{CONTAINER}:/usr/local/bin/docker"])
    for script in ("ensure-docker.sh", "ensure-python-venv.sh"):
        dockercli.run(["cp", str(ROOT / "scripts" / script), f"{CONTAINER}:/usr/local/sbin/{script}"])
    try:
        yield CONTAINER
    finally:
        dockercli.run(["rm", "-f", "-v", CONTAINER], check=False)


def _installed() -> str:
    return sh("dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n'").stdout


def test_a_client_only_machine_gets_a_daemon_and_the_controller_programs(machine: str) -> None:
    # The machine as found: this machine's docker client on PATH, no daemon, none of the programs the toolkit runs.
    client = CLIENT if CLIENT.exists() else Path(dockercli.docker_binary())
    version = ["version", "--format", "{{.Client.Version}}"]
    client_version = subprocess.run([client, *version], capture_output=True, text=True, check=False).stdout.strip()
    assert sh("command -v docker").stdout.strip() == "/usr/local/bin/docker"
    assert sh("docker version --format '{{.Client.Version}}'").stdout.strip() == client_version
    for program in ("dockerd", "debootstrap", "gpg", "curl", "sysctl", *(p.name for p in PROGRAMS)):
        assert sh(f"command -v {program}").returncode != 0, program
    assert sh("docker info").returncode != 0

    started = time.monotonic()
    first = sh("/usr/local/sbin/ensure-docker.sh")
    first_s = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr + sh("tail -20 /var/log/dockerd.log").stdout
    lines = first.stdout.splitlines()
    assert lines[0] == f"ensure-docker: installing {' '.join(PACKAGES)}", first.stdout
    assert "ensure-docker: starting dockerd (log: /var/log/dockerd.log)" in lines
    assert lines[-1].startswith("ensure-docker: dockerd 20.10."), first.stdout
    packages = _installed()
    assert all(f"\n{p} " in f"\n{packages}" for p in PACKAGES), packages
    # Every controller program is there now, and the daemon answers the client that was there first.
    assert sh(f"command -v {' '.join(p.name for p in PROGRAMS)} dockerd").returncode == 0
    info = sh("docker info --format '{{.ServerVersion}}'")
    assert info.returncode == 0 and info.stdout.startswith("20.10."), info.stdout + info.stderr
    assert sh("command -v docker").stdout.strip() == "/usr/local/bin/docker"
    assert first_s < 300, f"first run took {first_s:.0f} s"

    # Again: nothing to install, nothing to start, nothing changed.
    started = time.monotonic()
    again = sh("/usr/local/sbin/ensure-docker.sh")
    again_s = time.monotonic() - started
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines() == [lines[-1]]
    assert _installed() == packages
    assert again_s < 10, f"second run took {again_s:.1f} s"
    print(f"ensure-docker on a client-only Debian 12: first run {first_s:.0f} s, second {again_s:.1f} s")


def test_python_gets_its_venv_module(machine: str) -> None:
    assert sh("python3 -m venv /tmp/before").returncode != 0  # Debian's python3 alone: no ensurepip
    first = sh("/usr/local/sbin/ensure-python-venv.sh python3")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stderr.splitlines()[0].startswith("ensure-python-venv: installing python3.11-venv"), first.stderr
    made = sh("python3 -m venv /tmp/venv && /tmp/venv/bin/python -m pip --version")
    assert made.returncode == 0 and made.stdout.startswith("pip "), made.stdout + made.stderr
    packages = _installed()
    started = time.monotonic()
    again = sh("/usr/local/sbin/ensure-python-venv.sh python3")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert time.monotonic() - started < 5 and _installed() == packages
