"""Facts about a GPU host, one cheap read-only command each (pyinfra re-runs a fact every time it is asked
for, and evaluates every operation twice, so each fact batches what it needs into one shell command).

+ ``OsReleaseFact`` -> ``OsRelease``; ``Probe`` -> ``ProbeResult`` (the core's probe run on the host);
+ ``AptKeyState``: what the core's apt key installer would do (``--check``);
+ ``GpuHealth`` -> ``HealthResult`` (the core's GPU health verdicts, from its reader run on the host);
+ ``DriverState``, ``FabricManagerState``: packages, holds, services;
+ ``DockerState`` (daemon.json bytes, service, runtimes) and ``DockerImage`` (image id or None);
+ ``WeightsState`` (the host-side verifier's report), ``VllmUnits`` (unit files, content hashes, states),
  ``FileSha256`` (hash of one root-only file), ``EnvFileState`` (would the EnvironmentFile change).

Values are typed for the deploy code and printable by ``pyinfra INVENTORY fact ms4fleet_pyinfra.facts.NAME``:
pyinfra's CLI JSON-encodes a fact's value and calls ``to_json`` on what it cannot encode itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
from dataclasses import dataclass, field, fields
from typing import Any

from pyinfra.api.facts import FactBase
from typing_extensions import override

from ms4fleet import aptkey, paths
from ms4fleet.converged import image_id, image_query
from ms4fleet.health import HealthError, HealthReport, exclusions, parse_health
from ms4fleet.hostoutput import DPKG_FORMAT, SEPARATOR, installed_packages, sections, upstream_version
from ms4fleet.hostscripts import python_command
from ms4fleet.kernels import BOOT_MODULES_SCRIPT, parse_boot_modules
from ms4fleet.probe import ProbeError, ProbeReport, parse_probe
from ms4fleet.provision import DAEMON_JSON, REBOOT_REQUIRED, OsRelease

# nvidia-smi is outside PATH on some images (GPU containers and VMs keep it in /usr/local/nvidia/bin).
_SMI = "PATH=$PATH:/usr/local/nvidia/bin nvidia-smi"
_DRIVER_PACKAGE = re.compile(r"nvidia-driver-\d+(-open|-server|-server-open)?")


class Plain:
    """Mixin for the facts' dataclasses: ``to_json`` gives their fields as plain JSON data."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value.to_json() if hasattr(value, "to_json") else value


class PackageSet(frozenset[str]):
    """Package names (a frozenset) that pyinfra's CLI can print."""

    def to_json(self) -> list[str]:
        return sorted(self)


def _sections(output: list[str]) -> list[list[str]]:
    """Split a batched fact's output on the separator lines its command prints."""
    parts: list[list[str]] = [[]]
    for line in output:
        if line.strip() == SEPARATOR:
            parts.append([])
        else:
            parts[-1].append(line)
    return parts


def _section(output: list[str], index: int) -> list[str]:
    parts = _sections(output)
    return parts[index] if index < len(parts) else []


def _dpkg_query(*patterns: str) -> str:
    quoted = " ".join(shlex.quote(p) for p in patterns)
    return f"dpkg-query -W -f={shlex.quote(DPKG_FORMAT)} {quoted} 2>/dev/null || true"


@dataclass(frozen=True)
class ProbeResult:
    report: ProbeReport | None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        """What ``pyinfra INVENTORY fact ms4fleet_pyinfra.facts.Probe`` prints per host (its JSON encoder
        calls ``to_json``): the core's report as the probe wrote it, or why there is none."""
        report = None if self.report is None else self.report.model_dump(mode="json", by_alias=True)
        return {"report": report, "error": self.error}


class OsReleaseFact(FactBase[OsRelease]):
    """``/etc/os-release`` reduced to what selects packages (``ubuntu`` + ``24.04``)."""

    @override
    def command(self) -> str:
        return "cat /etc/os-release 2>/dev/null || true"

    @staticmethod
    def default() -> OsRelease:
        return OsRelease("", "")

    @override
    def process(self, output: list[str]) -> OsRelease:
        return OsRelease.parse("\n".join(output))


class Probe(FactBase[ProbeResult]):
    """The core's GPU probe (``ms4fleet/hostside/probe.py``), run on the host and parsed by the core."""

    @override
    def command(self) -> str:
        return python_command("probe.py")

    @override
    def requires_command(self) -> str:
        return "python3"

    @staticmethod
    def default() -> ProbeResult:
        return ProbeResult(None, "python3 is missing on the host: the probe cannot run")

    @override
    def process(self, output: list[str]) -> ProbeResult:
        try:
            return ProbeResult(parse_probe("\n".join(output)))
        except ProbeError as err:
            return ProbeResult(None, str(err))


class AptKeyState(FactBase[dict[str, Any]]):
    """What the core's apt key installer (``ms4fleet/hostside/apt_key.py``) would do: nothing where the keyring
    already holds the pinned key (and nothing is downloaded then); else whether the key at the URL is the
    pinned one. ``{"changed": bool, "fingerprints": [...], "error": "..."}``.

    + url: where the key is published, e.g. ``https://developer.download.nvidia.com/.../3bf863cc.pub``
    + keyring: the file it is kept in, e.g. ``/etc/apt/keyrings/example.asc``
    + fingerprint: the pinned primary key, e.g. ``EB693B3035CD5710E231E123A4B469963BF863CC``
    """

    @override
    def command(self, url: str, keyring: str, fingerprint: str) -> str:
        # Exit 1 carries the refusal in the JSON: the fact reads it rather than failing.
        return python_command("apt_key.py", url, keyring, fingerprint, "--check") + " || true"

    @override
    def requires_command(self, url: str, keyring: str, fingerprint: str) -> str:
        return "python3"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"changed": True, "fingerprints": [], "error": "python3 is missing on the host"}

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        return aptkey.result(output)


@dataclass(frozen=True)
class HealthResult:
    report: HealthReport | None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        """What ``pyinfra INVENTORY fact ms4fleet_pyinfra.facts.GpuHealth`` prints per host: the core's
        verdict per GPU (with reasons and fixes), or why there is none."""
        if self.report is None:
            return {"report": None, "error": self.error, "excluded": []}
        # Counted against the GPUs the driver lists; the deploy counts against the configured GPU count.
        excluded = exclusions(self.report, len(self.report.gpus))
        return {"report": self.report.to_json(), "error": self.error, "excluded": [e.to_json() for e in excluded]}


class GpuHealth(FactBase[HealthResult]):
    """The core's GPU health reading (``ms4fleet/hostside/health.py``), run on the host, judged by the core.

    + watch_s: also watch NVML Xid events and PCIe replays this many seconds, e.g. ``5``
    + dcgm_level: run ``dcgmi diag -r N`` where DCGM is installed (0: never), e.g. ``1``
    """

    @override
    def command(self, watch_s: float = 0, dcgm_level: int = 0) -> str:
        return python_command("health.py", "--watch-s", str(float(watch_s)), "--dcgm-level", str(int(dcgm_level)))

    @override
    def requires_command(self, watch_s: float = 0, dcgm_level: int = 0) -> str:
        return "python3"

    @staticmethod
    def default() -> HealthResult:
        return HealthResult(None, "python3 is missing on the host: the health check cannot run")

    @override
    def process(self, output: list[str]) -> HealthResult:
        try:
            return HealthResult(parse_health("\n".join(output), "host"))
        except HealthError as err:
            return HealthResult(None, str(err))


@dataclass(frozen=True)
class DriverInfo(Plain):
    """The NVIDIA driver as apt installed it and as the kernel runs it."""

    package: str | None = None
    version: str | None = None
    held: bool = False
    loaded_version: str | None = None
    open_modules: bool | None = None
    reboot_required: bool = False

    @property
    def branch(self) -> int | None:
        return int(self.version.split(".", 1)[0]) if self.version else None


class BootKernels(FactBase[dict[str, tuple[str, ...]]]):
    """Every kernel that can boot and its NVIDIA module files (``ms4fleet.kernels``), read right before a reboot."""

    @override
    def command(self) -> str:
        return BOOT_MODULES_SCRIPT

    @staticmethod
    def default() -> dict[str, tuple[str, ...]]:
        return {}

    @override
    def process(self, output: list[str]) -> dict[str, tuple[str, ...]]:
        return parse_boot_modules(output)


class DriverState(FactBase[DriverInfo]):
    """Installed driver package (``nvidia-driver-<branch>[-open]``), hold, loaded version and flavour."""

    @override
    def command(self) -> str:
        return " ; ".join(
            [
                _dpkg_query("nvidia-driver-*"),
                f"echo {SEPARATOR}",
                "apt-mark showhold 2>/dev/null || true",
                f"echo {SEPARATOR}",
                f"{_SMI} --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 || true",
                f"echo {SEPARATOR}",
                "head -n1 /proc/driver/nvidia/version 2>/dev/null || true",
                f"echo {SEPARATOR}",
                f"test -e {REBOOT_REQUIRED} && echo reboot-required || true",
            ]
        )

    @staticmethod
    def default() -> DriverInfo:
        return DriverInfo()

    @override
    def process(self, output: list[str]) -> DriverInfo:
        installed = installed_packages(_section(output, 0))
        drivers = {n: v for n, v in installed.items() if _DRIVER_PACKAGE.fullmatch(n)}
        held = {line.strip() for line in _section(output, 1)}
        loaded = next((line.strip() for line in _section(output, 2) if line.strip()), None)
        proc = " ".join(_section(output, 3))
        package = sorted(drivers)[-1] if drivers else None
        flavor: bool | None = None
        if proc:
            flavor = "Open Kernel Module" in proc
            if loaded is None:
                match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", proc)
                loaded = match.group(1) if match else None
        elif package is not None:
            flavor = package.endswith("-open")
        return DriverInfo(
            package=package,
            version=upstream_version(drivers[package]) if package else None,
            held=package in held if package else False,
            loaded_version=loaded if loaded and re.match(r"^\d+\.\d+", loaded) else None,
            open_modules=flavor,
            reboot_required=any(line.strip() == "reboot-required" for line in _section(output, 4)),
        )


@dataclass(frozen=True)
class FabricManagerInfo(Plain):
    packages: dict[str, str] = field(default_factory=dict)
    held: frozenset[str] = frozenset()
    active: bool = False

    @property
    def version(self) -> str | None:
        for name, version in sorted(self.packages.items()):
            if name.startswith("nvidia-fabricmanager"):
                return upstream_version(version)
        return None


class FabricManagerState(FactBase[FabricManagerInfo]):
    """Fabric manager (and nvlsm) packages, their holds, and whether the service runs."""

    @override
    def command(self) -> str:
        return " ; ".join(
            [
                _dpkg_query("nvidia-fabricmanager*", "nvlsm"),
                f"echo {SEPARATOR}",
                "apt-mark showhold 2>/dev/null || true",
                f"echo {SEPARATOR}",
                "systemctl is-active nvidia-fabricmanager 2>/dev/null || true",
            ]
        )

    @staticmethod
    def default() -> FabricManagerInfo:
        return FabricManagerInfo()

    @override
    def process(self, output: list[str]) -> FabricManagerInfo:
        installed = installed_packages(_section(output, 0))
        held = frozenset(line.strip() for line in _section(output, 1)) & frozenset(installed)
        state = " ".join(_section(output, 2)).strip()
        return FabricManagerInfo(installed, held, state == "active")


@dataclass(frozen=True)
class DockerInfo(Plain):
    daemon_json: str | None = None
    active: bool = False
    installed: bool = False

    @property
    def runtimes(self) -> dict[str, Any]:
        try:
            data = json.loads(self.daemon_json or "{}")
        except ValueError:
            return {}
        runtimes = data.get("runtimes") if isinstance(data, dict) else None
        return dict(runtimes) if isinstance(runtimes, dict) else {}


class DockerState(FactBase[DockerInfo]):
    """daemon.json (exact bytes, base64 on the wire), whether dockerd is installed and active."""

    @override
    def command(self) -> str:
        return " ; ".join(
            [
                f"base64 -w0 {DAEMON_JSON} 2>/dev/null && echo || echo absent",
                f"echo {SEPARATOR}",
                "command -v dockerd >/dev/null && echo installed || true",
                f"echo {SEPARATOR}",
                "systemctl is-active docker 2>/dev/null || true",
            ]
        )

    @staticmethod
    def default() -> DockerInfo:
        return DockerInfo()

    @override
    def process(self, output: list[str]) -> DockerInfo:
        encoded = "".join(_section(output, 0)).strip()
        content: str | None = None
        if encoded != "absent":
            try:
                content = base64.b64decode(encoded, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                content = None
        return DockerInfo(
            daemon_json=content,
            installed="installed" in " ".join(_section(output, 1)),
            active=" ".join(_section(output, 2)).strip() == "active",
        )


class DockerImage(FactBase[str | None]):
    """The local image id of ``image`` (None when absent or Docker is not installed)."""

    @override
    def command(self, image: str) -> str:
        # The converged check's query (Docker's API, else the CLI): one way to ask a host for an image.
        return f"{image_query(image)} 2>/dev/null || true"

    @override
    def requires_command(self, image: str) -> str:
        return "docker"

    @override
    def process(self, output: list[str]) -> str | None:
        found = image_id(output)
        return found if found.startswith("sha256:") else None


class WeightsState(FactBase[dict[str, Any]]):
    """The host-side verifier's quick check of a weights directory (``ok``, ``files``, ``bad``, ``error``)."""

    @override
    def command(self, directory: str, repo: str, revision: str) -> str:
        verify = python_command(
            "weights_verify.py", "verify", directory, "--repo", repo, "--revision", revision, "--json"
        )
        return f"{verify} || true"

    @override
    def requires_command(self, directory: str, repo: str, revision: str) -> str:
        return "python3"

    @staticmethod
    def default() -> dict[str, Any]:
        return {"ok": False, "error": "python3 is missing on the host"}

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        for line in reversed(output):
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if isinstance(report, dict):
                return report
        return {"ok": False, "error": "the verifier printed no report: " + " ".join(output)[-200:]}


@dataclass(frozen=True)
class UnitInfo(Plain):
    sha256: str
    active: str
    enabled: str


class VllmUnits(FactBase[dict[str, UnitInfo]]):
    """Every ms4fleet vLLM unit file: content sha256, ``is-active`` and ``is-enabled``."""

    @override
    def command(self) -> str:
        return (
            f"for f in {paths.SYSTEMD_DIR}/{paths.UNIT_PREFIX}-*.service; do "
            '[ -f "$f" ] || continue; u=$(basename "$f"); '
            'printf "%s %s %s %s\\n" "$u" "$(sha256sum < "$f" | cut -d" " -f1)" '
            '"$(systemctl is-active "$u" 2>/dev/null || true)" "$(systemctl is-enabled "$u" 2>/dev/null || true)"; '
            "done"
        )

    @staticmethod
    def default() -> dict[str, UnitInfo]:
        return {}

    @override
    def process(self, output: list[str]) -> dict[str, UnitInfo]:
        units = {}
        for line in output:
            bits = line.split()
            if len(bits) >= 2:
                units[bits[0]] = UnitInfo(bits[1], bits[2] if len(bits) > 2 else "", bits[3] if len(bits) > 3 else "")
        return units


class FileSha256(FactBase[str | None]):
    """sha256 of one file (root-only files included, with sudo); None when it does not exist."""

    @override
    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return f"test -f {quoted} && sha256sum {quoted} | cut -d' ' -f1 || true"

    @override
    def process(self, output: list[str]) -> str | None:
        first = next((line.strip() for line in output if line.strip()), "")
        return first if re.fullmatch(r"[0-9a-f]{64}", first) else None


class EnvFileState(FactBase[str]):
    """Would the service's EnvironmentFile change? Runs the core's script in check mode: ``changed``,
    ``unchanged``, or ``missing-secret: <path>``."""

    @override
    def command(self, script: str) -> str:
        return f"sh -c {shlex.quote(script)} 2>&1 || true"

    @override
    def process(self, output: list[str]) -> str:
        text = " ".join(line.strip() for line in output if line.strip())
        if text in ("changed", "unchanged"):
            return text
        return f"missing-secret: {text}"


class InstalledVersions(FactBase[dict[str, str]]):
    """The installed versions of ``packages`` (dpkg-query; a package that is not installed is left out)."""

    @override
    def command(self, packages: tuple[str, ...]) -> str:
        return _dpkg_query(*packages)

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    @override
    def process(self, output: list[str]) -> dict[str, str]:
        return installed_packages(output)


class AptHolds(FactBase[PackageSet]):
    """Packages on hold (``apt-mark showhold``)."""

    @override
    def command(self) -> str:
        return "apt-mark showhold 2>/dev/null || true"

    @staticmethod
    def default() -> PackageSet:
        return PackageSet()

    @override
    def process(self, output: list[str]) -> PackageSet:
        return PackageSet(line.strip() for line in output if line.strip())


class UserExists(FactBase[bool]):
    """Whether a local account exists (``getent passwd``)."""

    @override
    def command(self, user: str) -> str:
        return f"getent passwd {shlex.quote(user)} >/dev/null && echo yes || echo no"

    @override
    def process(self, output: list[str]) -> bool:
        return "yes" in (line.strip() for line in output)


class Sections(FactBase[dict[str, list[str]]]):
    """Output of a batched script whose parts each start with a ``--ms4fleet-- NAME`` line, by name."""

    @override
    def command(self, script: str) -> str:
        return f"sh -c {shlex.quote(script)} 2>/dev/null || true"

    @staticmethod
    def default() -> dict[str, list[str]]:
        return {}

    @override
    def process(self, output: list[str]) -> dict[str, list[str]]:
        return sections(output)


class ServiceStates(FactBase[dict[str, tuple[str, str]]]):
    """``{unit: (is-active, is-enabled)}``; empty answers where systemd is absent (never fails the host)."""

    @override
    def command(self, services: tuple[str, ...]) -> str:
        names = " ".join(shlex.quote(s) for s in services)
        return (
            f"for s in {names}; do "
            'printf "%s %s %s\\n" "$s" "$(systemctl is-active "$s" 2>/dev/null)" '
            '"$(systemctl is-enabled "$s" 2>/dev/null)"; done'
        )

    @staticmethod
    def default() -> dict[str, tuple[str, str]]:
        return {}

    @override
    def process(self, output: list[str]) -> dict[str, tuple[str, str]]:
        out = {}
        for line in output:
            bits = line.split()
            if bits:
                out[bits[0]] = (bits[1] if len(bits) > 1 else "", bits[2] if len(bits) > 2 else "")
        return out
