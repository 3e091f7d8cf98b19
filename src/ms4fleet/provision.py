"""What a GPU host must have before vLLM can serve: packages (named, pinned, held), the NVIDIA apt source,
and the exact bytes of every file ms4fleet manages for provisioning. Both engines apply this plan.

+ ``provision_plan(config, os)``: e.g. 8 x H200 on Ubuntu 24.04 -> open driver 580 pinned and held, fabric
  manager at the driver's exact version (NVSwitch), CUDA toolkit, docker.io, containerd and
  nvidia-container-toolkit pinned to their series (``catalog/packages.toml``) and held.
+ ``provision_plan(config, os, stack)``: the same for a probed host, with the core's decision for what it
  already has (``ms4fleet.adopt``: an adopted driver or docker-ce gets no package; a refusal raises).
+ ``daemon_json(current, config)``: Docker's daemon.json with ms4fleet's keys merged into what is there.
+ ``released_holds(held_groups, held)``: the holds to release before apt installs a held group's packages:
  the same group's packages of another branch or flavour (apt refuses to remove a held package).
+ ``pinned_moves(group_pins, installed)``: the driver and fabric manager packages the host has at a version
  other than the plan's pin (held, so apt's install-what-is-missing never moves them): a deploy installs them
  at the pin with ``move_script`` (their hold stays; refused with one line when the pinned build is in no apt
  source) and the new driver's reboot follows.
+ ``daemon_json_apply(current, desired)``: how dockerd takes a new daemon.json: ``none``, ``reload`` (every
  changed key is one dockerd reloads on SIGHUP: the replicas' containers are not touched) or ``restart``.
Every host also gets the unattended-upgrades blacklist of kernel and NVIDIA packages (``UNATTENDED_FILE``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from ms4fleet import healthwatch
from ms4fleet.catalog import package_series
from ms4fleet.config import AptRepo, ConfigError, HostConfig
from ms4fleet.paths import HEADER
from ms4fleet.proxy import PROXY_CONF, PROXY_SERVICE, RELOAD_COMMAND, host_proxy_conf
from ms4fleet.serving import replica_ports
from ms4fleet.weights.startcheck import verifier_file

if TYPE_CHECKING:
    from ms4fleet.adopt import StackPlan

KEYRING = "/etc/apt/keyrings/ms4fleet-nvidia.asc"
SOURCES_FILE = "/etc/apt/sources.list.d/ms4fleet-nvidia.sources"
PREFERENCES_FILE = "/etc/apt/preferences.d/ms4fleet-nvidia"
NOUVEAU_FILE = "/etc/modprobe.d/ms4fleet-blacklist-nouveau.conf"
DAEMON_JSON = "/etc/docker/daemon.json"
# daemon.json keys dockerd applies on SIGHUP, with no restart: Docker's documented reload list (dockerd
# reference, "Configuration reload behavior"). Left out: `features`, which is in that list but whose features
# (the containerd image store) take effect only when dockerd starts; `runtimes` and `default-runtime`: the
# replicas run with `--gpus`, whose NVIDIA device driver dockerd registers only when it starts with the container
# toolkit's hook installed, so the change that adds the nvidia runtime (the toolkit just installed) must restart
# it, or `docker run --gpus` fails with 'could not select device driver'.
DOCKER_RELOADABLE = frozenset(
    {
        "allow-nondistributable-artifacts",
        "authorization-plugins",
        "debug",
        "insecure-registries",
        "labels",
        "live-restore",
        "max-concurrent-downloads",
        "max-concurrent-uploads",
        "max-download-attempts",
        "registry-mirrors",
        "shutdown-timeout",
    }
)
# How each takes a new daemon.json: the unit's ExecReload sends dockerd SIGHUP (and starts a stopped Docker).
DOCKER_APPLY_COMMANDS = {
    "reload": ("systemctl", "reload-or-restart", "docker"),
    "restart": ("systemctl", "restart", "docker"),
}
# A drop-in for the driver's own unit (its directory names the unit the engines reload and restart on change).
PERSISTENCE_DROPIN = "/etc/systemd/system/nvidia-persistenced.service.d/ms4fleet.conf"
REBOOT_REQUIRED = "/var/run/reboot-required"
# unattended-upgrades leaves the kernel and NVIDIA's packages alone: a kernel or driver moves only through a
# deploy, which checks that the kernel that boots next has the driver's module (ms4fleet.kernels).
UNATTENDED_FILE = "/etc/apt/apt.conf.d/51ms4fleet-unattended-upgrades"
# Regular expressions unattended-upgrades matches at the start of a package name.
UNATTENDED_BLACKLIST = (
    "linux-image-",
    "linux-headers-",
    "linux-modules-",
    "linux-generic",
    "linux-virtual",
    "linux-aws",
    "linux-gcp",
    "linux-azure",
    "linux-oracle",
    "nvidia-",
    "libnvidia-",
    "cuda-drivers",
)
# The service account: a system user that never logs in (every supported release has this shell).
SERVICE_SHELL = "/usr/sbin/nologin"
# Run after the nouveau blacklist changes, so it applies at the next boot (every supported release rebuilds
# its initramfs this way; a host without the tool, such as a container, has no initramfs to rebuild).
INITRAMFS_COMMAND = ("/usr/sbin/update-initramfs", "-u")
# NVIDIA's CUDA network repositories: one flat repository per distribution release.
_CUDA_REPO = "https://developer.download.nvidia.com/compute/cuda/repos/{key}/x86_64/"
_CUDA_KEY = "https://developer.download.nvidia.com/compute/cuda/repos/{key}/x86_64/3bf863cc.pub"
# Docker from the OS archive, and the container runtime under it (named so that it is held and pinned too).
DOCKER_PACKAGES = ("docker.io", "containerd")
CONTAINER_TOOLKIT = "nvidia-container-toolkit"
# The toolkit's packages depend on each other at one exact version: apt pins them together.
CONTAINER_TOOLKIT_PINNED = (
    CONTAINER_TOOLKIT,
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
)
# NVIDIA's CUDA repository signing key (3bf863cc.pub, "cudatools <cudatools@nvidia.com>"), as NVIDIA publishes it.
NVIDIA_KEY_FINGERPRINT = "EB693B3035CD5710E231E123A4B469963BF863CC"
SUPPORTED_OS = {"ubuntu": ("22.04", "24.04"), "debian": ("12",)}
# Tools the service and the engines call on the host: curl (the unit's readiness wait), rsync (weights), and
# nginx: the host proxy, the only way to a replica from off the host (ms4fleet.proxy).
BASE_PACKAGES = ("ca-certificates", "curl", "rsync", "python3", PROXY_SERVICE)


@dataclass(frozen=True)
class OsRelease:
    """The host's /etc/os-release, reduced to what selects packages."""

    id: str
    version_id: str

    @property
    def key(self) -> str:
        """``ubuntu2404``, ``debian12``: NVIDIA's name for the release in repository URLs."""
        return f"{self.id}{self.version_id.replace('.', '')}"

    def to_json(self) -> dict[str, str]:
        """As plain JSON data (how the engines print it)."""
        return {"id": self.id, "version_id": self.version_id, "key": self.key}

    @classmethod
    def parse(cls, text: str) -> OsRelease:
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip().strip('"')
        return cls(fields.get("ID", ""), fields.get("VERSION_ID", ""))


@dataclass(frozen=True)
class ManagedFile:
    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    # What runs on the host after an engine changes this file (skipped where argv[0] is not there).
    after_change: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


@dataclass(frozen=True)
class Pin:
    """One apt preference: ``names`` at the versions matching ``version`` (apt's glob), above any other."""

    names: tuple[str, ...]
    version: str

    def stanza(self) -> str:
        return f"Package: {' '.join(self.names)}\nPin: version {self.version}\nPin-Priority: 1001\n"


@dataclass(frozen=True)
class Packages:
    """Packages installed together; ``hold`` keeps apt from moving them behind ms4fleet's back."""

    names: tuple[str, ...]
    hold: bool = False


@dataclass(frozen=True)
class ProvisionPlan:
    os: OsRelease
    nvidia_repo: AptRepo
    base: Packages
    driver: Packages | None
    fabric_manager: Packages | None
    cuda: Packages | None
    docker: Packages | None
    container_toolkit: Packages | None
    files: tuple[ManagedFile, ...]
    enabled_services: tuple[str, ...]
    service_user: str
    driver_version: str
    notes: tuple[str, ...] = field(default=())
    # What the preferences file pins: the driver and the fabric manager to ``driver_version``, Docker,
    # containerd and the container toolkit to their series.
    pins: tuple[Pin, ...] = field(default=())
    # The decision for what the host already has (``ms4fleet.adopt``), where its probe was read.
    stack: StackPlan | None = None

    def packages(self) -> list[Packages]:
        """Install order: base tools, driver, fabric manager, CUDA, Docker, container toolkit."""
        groups = (self.base, self.driver, self.fabric_manager, self.cuda, self.docker, self.container_toolkit)
        return [g for g in groups if g is not None]

    @property
    def held(self) -> tuple[str, ...]:
        return tuple(name for group in self.packages() if group.hold for name in group.names)

    def group_pins(self) -> dict[str, tuple[Pin, ...]]:
        """The pins that apply to each group's packages (group name -> pins)."""
        groups = {"driver": self.driver, "fabric_manager": self.fabric_manager}
        return {
            name: tuple(p for p in self.pins if set(p.names) & set(group.names))
            for name, group in groups.items()
            if group is not None
        }


# The names a held group's packages have in any branch or flavour. A host's hold on one of them that the plan
# no longer names (the driver of the branch it leaves) is released before apt installs the plan's, which
# conflict with it: apt refuses to remove a held package.
HOLD_FAMILIES = {
    "driver": ("nvidia-driver-",),
    "fabric_manager": ("nvidia-fabricmanager", "cuda-drivers-fabricmanager"),
}


def released_holds(held_groups: Mapping[str, Sequence[str]], held: Iterable[str]) -> tuple[str, ...]:
    """Of ``held`` (the host's ``apt-mark showhold``), the packages to release before the groups the plan holds
    (``held_groups``: group -> the names it holds) are installed: their family's, not named by the plan."""
    keep = {name for names in held_groups.values() for name in names}
    prefixes = tuple(prefix for group in held_groups for prefix in HOLD_FAMILIES.get(group, ()))
    return tuple(sorted({name for name in held if name not in keep and prefixes and name.startswith(prefixes)}))


# The groups a deploy moves to their pin where the host has them at another version: the driver and the fabric
# manager, which must match it. Both are held, and an install of a package already present moves nothing.
PINNED_GROUPS = ("driver", "fabric_manager")
# Seconds apt waits for the dpkg lock (unattended-upgrades holds it on a fresh Ubuntu) instead of failing the host.
APT_LOCK_TIMEOUT_S = 600
# Installs held packages at apt's candidate, which the pin makes the pinned version (Pin-Priority 1001 also
# downgrades); dpkg keeps their hold. The package names follow.
MOVE_COMMAND = (
    "env",
    "DEBIAN_FRONTEND=noninteractive",
    "apt-get",
    "install",
    "-y",
    "-q",
    "-o",
    f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}",
    "-o",
    "Dpkg::Options::=--force-confold",
    "--no-install-recommends",
    "--allow-change-held-packages",
    "--allow-downgrades",
)


def pinned_moves(
    group_pins: Mapping[str, Iterable[Pin]], installed: Mapping[str, str], only: Iterable[str] | None = None
) -> tuple[str, ...]:
    """Of the packages the pins of ``PINNED_GROUPS`` name (``group_pins``: group -> its pins; ``only``: just
    these packages), those installed (``installed``: package -> its dpkg version) at a version the pin's glob
    does not match, as apt matches it."""
    wanted = None if only is None else set(only)
    return tuple(
        sorted(
            {
                name
                for group in PINNED_GROUPS
                for pin in group_pins.get(group, ())
                for name in pin.names
                if name in installed
                and (wanted is None or name in wanted)
                and not fnmatchcase(installed[name], pin.version)
            }
        )
    )


# A pin glob as the core writes it (a validated version, then ``-*``); anything else never reaches a shell.
_PIN_GLOB = re.compile(r"\A[0-9A-Za-z.+~:-]+\*?\Z")
_PACKAGE = re.compile(r"\A[a-z0-9][a-z0-9.+-]+\Z")  # Debian policy 5.6.1


def move_script(group_pins: Mapping[str, Iterable[Pin]], moves: Sequence[str]) -> str:
    """The shell that moves ``moves`` (``pinned_moves``'s answer) to their pin with ``MOVE_COMMAND``, refused
    first with one line on stderr (exit 1) when apt's candidate for one is not a version its pin matches: the
    pinned build is in no apt source, and apt would install another version (the newest, at priority 500) or
    none (the move would then repeat on every run)."""
    globs = {name: pin.version for group in PINNED_GROUPS for pin in group_pins.get(group, ()) for name in pin.names}
    lines = ["set -eu"]
    for name in moves:
        glob = globs[name]
        if not _PIN_GLOB.match(glob) or not _PACKAGE.match(name):
            raise ValueError(f"pin {name}={glob!r}: not a package name and version glob")
        lines += [
            f"candidate=$(apt-cache policy {name} | sed -n 's/^ *Candidate: //p')",
            f'case "$candidate" in {glob}) ;; *) echo "{name}: no build matching its pin {glob} in the apt sources'
            f" (apt's candidate: ${{candidate:-none}}): publish that build or pin a version the repository has\" >&2;"
            " exit 1 ;; esac",
        ]
    lines.append(f"exec {shlex.join((*MOVE_COMMAND, *moves))}")
    return "\n".join(lines) + "\n"


def check_os(host: str, os: OsRelease) -> None:
    versions = SUPPORTED_OS.get(os.id)
    if versions is None or os.version_id not in versions:
        supported = ", ".join(f"{name} {v}" for name, vs in SUPPORTED_OS.items() for v in vs)
        raise ConfigError(
            host, "os", f"{os.id or '?'} {os.version_id or '?'} is not supported: ms4fleet provisions {supported}"
        )


def default_repo(os: OsRelease) -> AptRepo:
    return AptRepo(
        url=_CUDA_REPO.format(key=os.key),
        suite="/",
        components=[],
        key_url=_CUDA_KEY.format(key=os.key),
        key_fingerprint=NVIDIA_KEY_FINGERPRINT,
    )


def driver_package(config: HostConfig) -> str:
    """Open kernel modules on every Hopper and Blackwell GPU: required on Blackwell, NVIDIA's default
    and recommendation on Hopper since R560. The proprietary flavour is only for GPUs that need it."""
    branch = config.provision.driver_branch
    return f"nvidia-driver-{branch}-open" if config.gpu.gpu.open_kernel_modules else f"nvidia-driver-{branch}"


def fabric_manager_packages(config: HostConfig) -> tuple[str, ...]:
    """NVSwitch baseboards only. From R580 the package drops the branch from its name; NVLink5 (B200)
    also needs the NVLink subnet manager."""
    gpu = config.gpu.gpu
    if not gpu.has_nvswitch(config.gpu.count):
        return ()
    branch = config.provision.driver_branch
    names = ["nvidia-fabricmanager" if branch >= 580 else f"nvidia-fabricmanager-{branch}"]
    if gpu.nvlink5:
        names.append("nvlsm")
    return tuple(names)


def provision_plan(config: HostConfig, os: OsRelease, stack: StackPlan | None = None) -> ProvisionPlan:
    """``stack``: the decision for what the host already has (``adopt.decide``); None before any probe."""
    check_os(config.name, os)
    if stack is not None:
        stack.check(config.name)
    provision = config.provision
    repo = provision.nvidia_apt_repo or default_repo(os)
    # An adopted (or unmanaged) driver is left alone: no package, pin, blacklist or persistence drop-in.
    manage = provision.manage_driver and (stack is None or stack.installs_driver)
    fm = fabric_manager_packages(config)
    docker_runtime = config.runtime.kind == "docker"
    adopts_docker = stack is not None and stack.adopts_docker
    pins = container_pins(config, os, with_docker=not adopts_docker) if docker_runtime else []
    fm_pinned = tuple(n for n in fm if n != "nvlsm")
    driver = driver_package(config) if stack is None else stack.driver_package
    if manage:
        # The driver and the fabric manager must be the same version or CUDA fails with error 802: pin both
        # to the configured version so neither can be upgraded alone (apt-mark hold also stops upgrades).
        pins.insert(0, Pin((driver, *fm_pinned), f"{provision.driver_version}-*"))
    elif stack is not None and fm_pinned:
        # The fabric manager follows the driver the host has, adopted or unmanaged.
        pins.insert(0, Pin(fm_pinned, f"{stack.driver_version}-*"))
    verifier_path, verifier, verifier_mode = verifier_file()
    files = [_sources_file(repo), ManagedFile(verifier_path, verifier.decode(), verifier_mode), _unattended_file()]
    if pins:
        files.append(_preferences_file(pins))
    if manage:
        files.append(_nouveau_file())
    files.append(ManagedFile(PROXY_CONF, host_proxy_conf(config, replica_ports(config)), after_change=RELOAD_COMMAND))
    # The standing GPU health reading the converged check takes (ms4fleet.healthwatch).
    watch = healthwatch.files()
    files += [ManagedFile(path, text, mode, after_change=healthwatch.AFTER_CHANGE) for path, text, mode in watch]
    services = [PROXY_SERVICE, healthwatch.TIMER]
    if manage and provision.persistence_mode:
        services.append("nvidia-persistenced")
        files.append(_persistence_dropin())
    if fm:
        services.append("nvidia-fabricmanager")
    if docker_runtime:
        services.append("docker")
    return ProvisionPlan(
        os=os,
        nvidia_repo=repo,
        base=Packages(BASE_PACKAGES),
        driver=Packages((driver,), hold=True) if manage else None,
        fabric_manager=Packages(fm, hold=True) if fm else None,
        cuda=Packages((f"cuda-toolkit-{provision.cuda_toolkit}",)),
        # Held like the driver: an unattended upgrade of any of them restarts the daemons every replica runs
        # under; ms4fleet moves them only through a deploy or a rollout, which drain first.
        docker=Packages(DOCKER_PACKAGES, hold=True) if docker_runtime and not adopts_docker else None,
        container_toolkit=Packages((CONTAINER_TOOLKIT,), hold=True) if docker_runtime else None,
        files=tuple(files),
        enabled_services=tuple(services),
        service_user=provision.service_user,
        driver_version=provision.driver_version if stack is None else stack.driver_version,
        notes=_notes(manage, stack),
        pins=tuple(pins),
        stack=stack,
    )


def _notes(manage: bool, stack: StackPlan | None) -> tuple[str, ...]:
    if stack is None:
        return () if manage else ("driver management is off: the installed driver is left as it is",)
    decisions = [("driver", stack.driver), ("docker", stack.docker), ("container toolkit", stack.container_toolkit)]
    return tuple(f"{name}: {d.action}: {d.reason}" for name, d in decisions if d is not None)


def container_pins(config: HostConfig, os: OsRelease, with_docker: bool = True) -> list[Pin]:
    """Docker, containerd and the container toolkit, each at its series: the inventory's, else the catalog's
    for the OS. Held like the driver, and pinned so that installing them picks that series. Without
    ``with_docker`` (an adopted docker-ce), the toolkit's alone."""
    series = package_series(os.key)
    provision = config.provision
    chosen = {
        "docker.io": provision.docker_version or series["docker.io"],
        "containerd": provision.containerd_version or series["containerd"],
        CONTAINER_TOOLKIT: provision.container_toolkit_version or series[CONTAINER_TOOLKIT],
    }
    docker = [Pin((name,), chosen[name]) for name in DOCKER_PACKAGES] if with_docker else []
    return [*docker, Pin(CONTAINER_TOOLKIT_PINNED, chosen[CONTAINER_TOOLKIT])]


def _sources_file(repo: AptRepo) -> ManagedFile:
    lines = [HEADER.rstrip("\n"), "Types: deb", f"URIs: {repo.url}", f"Suites: {repo.suite}"]
    if repo.components:
        lines.append(f"Components: {' '.join(repo.components)}")
    # The keyring and the pinned key in it: apt accepts no other signer, even if the keyring gains keys.
    lines.append(f"Signed-By: {KEYRING} {repo.key_fingerprint}")
    return ManagedFile(SOURCES_FILE, "\n".join(lines) + "\n")


def _preferences_file(pins: list[Pin]) -> ManagedFile:
    return ManagedFile(PREFERENCES_FILE, HEADER + "\n".join(pin.stanza() for pin in pins))


def _unattended_file() -> ManagedFile:
    entries = "".join(f'    "{pattern}";\n' for pattern in UNATTENDED_BLACKLIST)
    # apt.conf comments are // (not the HEADER's #); lists from several files add up.
    return ManagedFile(UNATTENDED_FILE, f"// {HEADER[2:]}Unattended-Upgrade::Package-Blacklist {{\n{entries}}};\n")


def _persistence_dropin() -> ManagedFile:
    """Persistence mode on through the daemon: the unit Ubuntu's and NVIDIA's packages ship starts it with
    --no-persistence-mode, which leaves every GPU's persistence off (the health check's persistence rule)."""
    return ManagedFile(
        PERSISTENCE_DROPIN,
        f"{HEADER}[Service]\nExecStart=\n"
        "ExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --persistence-mode --verbose\n",
    )


def _nouveau_file() -> ManagedFile:
    return ManagedFile(
        NOUVEAU_FILE, f"{HEADER}blacklist nouveau\noptions nouveau modeset=0\n", after_change=INITRAMFS_COMMAND
    )


def daemon_json(current: str | None, config: HostConfig) -> str:
    """daemon.json with ms4fleet's keys MERGED into whatever the host already has.

    Keys ms4fleet does not own are kept as they are. The nvidia runtime entry is the one
    ``nvidia-ctk runtime configure --runtime=docker`` writes; the default runtime is left alone because
    the units select GPUs with ``--gpus``.
    """
    try:
        data: dict[str, Any] = json.loads(current) if current and current.strip() else {}
    except ValueError:
        raise ConfigError(
            config.name, DAEMON_JSON, "is not valid JSON: fix or remove it, ms4fleet will not overwrite it blindly"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(config.name, DAEMON_JSON, "is not a JSON object: fix or remove it")
    data.update(config.provision.docker_daemon_options)
    # Containers outlive a restart of dockerd (a daemon.json change, a Docker upgrade): replicas keep serving.
    data["live-restore"] = True
    if config.runtime.kind == "docker":
        runtimes = dict(data.get("runtimes") or {})
        runtimes["nvidia"] = {"args": [], "path": "nvidia-container-runtime"}
        data["runtimes"] = runtimes
    return json.dumps(data, indent=4, sort_keys=True) + "\n"


def daemon_key_digests(text: str | None) -> dict[str, str]:
    """Each top-level key of a daemon.json with a digest of its value (a plan carries these, not the values:
    a proxy URL may hold a password). Text that is not a JSON object has no keys."""
    try:
        data = json.loads(text) if text and text.strip() else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(key): hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
        for key, value in sorted(data.items())
    }


def daemon_keys_changed(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The keys added, removed or changed between two ``daemon_key_digests``."""
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


def reloadable(keys: list[str]) -> bool:
    """dockerd applies a change of these keys on SIGHUP (no restart, no container touched)."""
    return all(key in DOCKER_RELOADABLE for key in keys)


def daemon_json_apply(current: str | None, desired: str) -> str:
    """How dockerd takes ``desired`` over the daemon.json it runs with (``current``): ``none`` (no key
    changed), ``reload`` (only keys dockerd reloads on SIGHUP) or ``restart``. Both engines run
    ``DOCKER_APPLY_COMMANDS[...]`` after writing the file."""
    changed = daemon_keys_changed(daemon_key_digests(current), daemon_key_digests(desired))
    if not changed:
        return "none"
    return "reload" if reloadable(changed) else "restart"


def needs_reboot(driver_changed: bool, reboot_required: bool, loaded: str | None, installed: str | None) -> bool:
    """Reboot only when it does something: the driver changed and the OS asks for it, or the kernel
    module loaded now is not the installed driver (nvidia-smi then fails with a version mismatch)."""
    if driver_changed and reboot_required:
        return True
    return loaded is not None and installed is not None and loaded != installed
