"""Brownfield hosts: what installed the NVIDIA stack a host already has, and what ms4fleet does about it.

+ ``classify(report)``: the probe's ``stack`` -> who owns the driver (``apt`` package, ``dkms``, ``runfile``,
  ``external``: loaded but installed by nothing on the host, such as a VM image's; ``none``), its loaded and
  installed versions and module flavour.
+ ``decide(config, report)``: ``StackPlan``: for the driver ``install``, ``keep`` (apt has the configured
  version), ``upgrade`` (through apt, which owns it), ``adopt`` (someone else's driver on the configured
  branch, loaded and answering: left alone), ``takeover`` (a runfile's, replaced with ms4fleet's packages on
  ``provision.driver_takeover: true``), ``unmanaged`` (``manage_driver: false``) or ``refuse`` (one line; also
  an install or upgrade under Secure Boot unless ``provision.secure_boot_mok: true`` says the DKMS key is enrolled);
  for Docker ``install`` docker.io, ``keep`` it, or ``adopt`` docker-ce (never a second engine); for the
  container toolkit ``install`` or ``keep``.

``hostplan.host_plan(..., stack=decide(...))`` applies it; ``ms4fleet plan --probe`` and both engines print it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.probe import ProbeReport

Owner = Literal["none", "apt", "dkms", "runfile", "external"]
Action = Literal["install", "keep", "upgrade", "adopt", "takeover", "unmanaged", "refuse"]
# Packages that carry the driver's kernel module or pull it in (Ubuntu's, Debian's and NVIDIA's names).
DRIVER_PACKAGE_PREFIXES = ("nvidia-driver-", "nvidia-dkms-", "linux-modules-nvidia-", "cuda-drivers", "nvidia-open")
# Docker engines from packages other than the OS archive's docker.io: ms4fleet adopts them, never adds another.
OTHER_DOCKER_PACKAGES = ("docker-ce", "moby-engine")
# The runfile's own uninstaller: a takeover runs it before apt installs the packaged driver.
RUNFILE_UNINSTALL = ("/usr/bin/nvidia-uninstall", "--silent")


@dataclass(frozen=True)
class DriverFacts:
    owner: Owner
    package: str | None
    loaded: str | None
    installed: str | None
    flavor: str | None
    # The GPUs answered through NVML or nvidia-smi (the loaded driver works).
    answers: bool
    evidence: tuple[str, ...]

    def describe(self) -> str:
        version = self.loaded or self.installed or "?"
        by = {
            "apt": f"package {self.package}",
            "dkms": f"DKMS ({self.package or 'no package'})",
            "runfile": "the runfile installer",
            "external": "nothing on this host (no package, DKMS or runfile: the image or hypervisor provides it)",
            "none": "nothing",
        }[self.owner]
        state = "loaded" if self.loaded else "not loaded"
        return f"driver {version} ({self.flavor or 'flavour unknown'}, {state}) installed by {by}"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"action": self.action, "reason": self.reason}


@dataclass(frozen=True)
class StackPlan:
    """The core's decision for a host's NVIDIA stack and Docker, from its probe."""

    driver_facts: DriverFacts
    driver: Decision
    docker: Decision | None
    container_toolkit: Decision | None
    # The driver version the fabric manager must match on this host (the adopted one where adopted).
    driver_version: str
    # The driver package the plan installs where it installs one (the host's flavour where apt keeps it).
    driver_package: str

    @property
    def installs_driver(self) -> bool:
        """Whether ms4fleet's driver package group applies (apt owns the driver, or will)."""
        return self.driver.action in ("install", "keep", "upgrade", "takeover")

    @property
    def adopts_docker(self) -> bool:
        return self.docker is not None and self.docker.action == "adopt"

    def before_driver_install(self) -> tuple[str, ...]:
        """What runs on the host before the driver package is installed (a takeover's uninstall)."""
        return RUNFILE_UNINSTALL if self.driver.action == "takeover" else ()

    def check(self, host: str) -> None:
        """Raise the one-line refusal, before any host is touched."""
        if self.driver.action == "refuse":
            raise ConfigError(host, "", self.driver.reason)

    def to_json(self) -> dict[str, Any]:
        f = self.driver_facts
        return {
            "driver": {
                **self.driver.to_json(),
                "owner": f.owner,
                "package": f.package,
                "loaded": f.loaded,
                "installed": f.installed,
                "flavor": f.flavor,
                "evidence": list(f.evidence),
            },
            # The version the driver is (or will be) at on this host: the fabric manager is pinned to it.
            "driver_version": self.driver_version,
            "docker": None if self.docker is None else self.docker.to_json(),
            "container_toolkit": None if self.container_toolkit is None else self.container_toolkit.to_json(),
        }


def _upstream(version: str) -> str:
    """A Debian version's upstream part: ``580.95.05-0ubuntu1`` -> ``580.95.05`` (epoch dropped)."""
    return version.split(":", 1)[-1].split("-", 1)[0]


def _branch(version: str | None) -> int | None:
    head = (version or "").split(".", 1)[0]
    return int(head) if head.isdigit() else None


def classify(report: ProbeReport) -> DriverFacts:
    module = report.driver.kernel_module
    stack = report.stack
    answers = report.source in ("nvml", "nvidia-smi") and bool(report.gpus)
    # A driver that answers is loaded, also where /proc/driver/nvidia is not visible (a container).
    loaded = module.version if module.loaded else report.driver.version if answers else None
    evidence = list(module.evidence)
    if stack is None:
        # A probe without the stack reading: only what is loaded is known.
        owner: Owner = "external" if loaded else "none"
        return DriverFacts(owner, None, loaded, None, module.flavor, answers, (*evidence, "no stack reading"))
    packages = stack.packages or {}
    driver_packages = sorted(n for n in packages if n.startswith(DRIVER_PACKAGE_PREFIXES))
    installed = stack.module_file_version
    package = None
    if stack.module_file:
        evidence.append(f"module file {stack.module_file}")
    if stack.module_owner:
        owner, package = "apt", stack.module_owner
        evidence.append(f"dpkg: {package} owns the module")
    elif stack.runfile_markers and not driver_packages:
        owner = "runfile"
        evidence += stack.runfile_markers
    elif stack.module_file and "/updates/dkms/" in stack.module_file:
        owner = "dkms"
        package = next((n for n in driver_packages if n.startswith("nvidia-dkms-")), None)
        evidence.append("built by DKMS")
    elif driver_packages:
        # A driver package without the module of the running kernel (e.g. a pending reboot).
        owner, package = "apt", next((n for n in driver_packages if n.startswith("nvidia-driver-")), driver_packages[0])
        evidence.append(f"dpkg: {package} installed")
    elif loaded or stack.module_file:
        owner = "external"
    else:
        owner = "none"
    if installed is None and package is not None and package in packages:
        installed = _upstream(packages[package])
    return DriverFacts(owner, package, loaded, installed, module.flavor, answers, tuple(evidence))


def decide_driver(config: HostConfig, facts: DriverFacts, package: str) -> Decision:
    """``package``: the driver package ms4fleet installs for this host (``provision.driver_package``)."""
    p = config.provision
    what = facts.describe()
    if not p.manage_driver:
        return Decision("unmanaged", f"{what}: provision.manage_driver is false, left as it is")
    if facts.owner == "none":
        return Decision("install", f"no NVIDIA driver: install {package} {p.driver_version}")
    gpu = config.gpu.gpu
    version = facts.loaded or facts.installed
    if gpu.open_kernel_modules == "required" and facts.flavor == "proprietary":
        if p.driver_takeover and facts.owner in ("apt", "dkms", "runfile"):
            action: Action = "upgrade" if facts.owner != "runfile" else "takeover"
            return Decision(action, f"{what}: {gpu.id} needs the open modules: replaced by {package} (driver_takeover)")
        return Decision(
            "refuse",
            f"{what} is the proprietary module and {gpu.id} needs the open one: install {package} or set "
            "provision.driver_takeover: true to let ms4fleet replace it",
        )
    if facts.owner in ("apt", "dkms"):
        if facts.installed == p.driver_version and facts.loaded in (None, facts.installed):
            return Decision("keep", f"{what}: the configured {p.driver_version}, kept pinned and held")
        return Decision("upgrade", f"{what}: moved to {package} {p.driver_version} through apt, which owns it")
    if _branch(version) == p.driver_branch:
        if facts.loaded and facts.answers:
            return Decision(
                "adopt",
                f"{what} is on the configured branch {p.driver_branch}, loaded and answering: left as it is "
                f"(driver_version {p.driver_version} applies to ms4fleet's packages only)",
            )
        if facts.owner != "runfile" or not p.driver_takeover:
            return Decision(
                "refuse",
                f"{what} but no GPU answers through it: fix or reboot the host (or set manage_driver: false)",
            )
    if facts.owner == "runfile":
        if p.driver_takeover:
            return Decision(
                "takeover",
                f"{what}: uninstalled ({RUNFILE_UNINSTALL[0]}) and replaced by {package} {p.driver_version}",
            )
        return Decision(
            "refuse",
            f"{what} is not on driver_branch {p.driver_branch}: set provision.driver_takeover: true to replace it "
            f"with {package}, or driver_branch: {_branch(version)} (and driver_version) to adopt it",
        )
    return Decision(
        "refuse",
        f"{what} is not on driver_branch {p.driver_branch} and ms4fleet cannot replace it: set "
        f"provision.driver_branch: {_branch(version)} (and driver_version) to adopt it, or manage_driver: false",
    )


def decide_docker(config: HostConfig, report: ProbeReport) -> Decision | None:
    if config.runtime.kind != "docker":
        return None
    stack = report.stack
    packages = (stack.packages if stack else None) or {}
    other = next((n for n in OTHER_DOCKER_PACKAGES if n in packages), None)
    if other is not None:
        return Decision(
            "adopt", f"{other} {packages[other]} is installed: adopted (docker.io is not added), daemon.json merged"
        )
    if "docker.io" in packages:
        return Decision("keep", f"docker.io {packages['docker.io']} is installed: kept pinned and held")
    if stack is not None and stack.packages is not None and stack.docker_binary:
        return Decision("adopt", f"Docker at {stack.docker_binary} comes from no package: adopted, daemon.json merged")
    return Decision("install", "no Docker: install docker.io and containerd")


def decide_toolkit(config: HostConfig, report: ProbeReport) -> Decision | None:
    if config.runtime.kind != "docker":
        return None
    packages = (report.stack.packages if report.stack else None) or {}
    name = "nvidia-container-toolkit"
    if name in packages:
        return Decision("keep", f"{name} {packages[name]} is installed: pinned to its series and held")
    return Decision("install", f"no {name}: installed")


def decide(config: HostConfig, report: ProbeReport, package: str) -> StackPlan:
    """``package``: the driver package ms4fleet installs on a new host (``provision.driver_package``)."""
    facts = classify(report)
    p = config.provision
    keeps_flavour = (
        facts.owner in ("apt", "dkms") and facts.flavor == "proprietary" and not p.driver_takeover
    ) and config.gpu.gpu.open_kernel_modules != "required"
    if keeps_flavour:
        # Open is only recommended here: apt moves the proprietary driver it owns within its flavour.
        package = f"nvidia-driver-{p.driver_branch}"
    driver = decide_driver(config, facts, package)
    secure_boot = report.stack is not None and report.stack.secure_boot.enabled is True
    if secure_boot and driver.action in ("install", "upgrade", "takeover") and not p.secure_boot_mok:
        driver = Decision(
            "refuse",
            f"Secure Boot is on and {package} builds its module with DKMS, which the firmware loads only when "
            "signed by an enrolled key: enroll the DKMS key (mokutil --import /var/lib/dkms/mok.pub, reboot, "
            "confirm) and set provision.secure_boot_mok: true, or turn Secure Boot off",
        )
    own = facts.loaded or facts.installed
    return StackPlan(
        driver_facts=facts,
        driver=driver,
        docker=decide_docker(config, report),
        container_toolkit=decide_toolkit(config, report),
        # A driver left alone keeps its version: the fabric manager follows it, not driver_version.
        driver_version=own if driver.action in ("adopt", "unmanaged") and own else p.driver_version,
        driver_package=package,
    )
