"""Is a host already exactly what the core wants? One batched, read-only command answers it.

A converged host then gets a single no-op instead of ~35 operations that would each read their own facts
twice (pyinfra evaluates every operation at prepare and again at execution): the no-op re-converge of a
fleet costs one round trip per host. Any difference, even one, plans the full deploy, whose operations
re-read their facts and change only what differs.

+ ``snapshot_script(desired)`` and ``differences(desired, sections)``; ``Desired.build(...)`` gathers what
  the core decided for the host.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shlex
from dataclasses import dataclass

from ms4fleet import paths
from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.provision import DAEMON_JSON, KEYRING, ProvisionPlan, daemon_json, needs_reboot
from ms4fleet.secrets import env_file_script, secret_path, service_secret_refs
from ms4fleet.serving import ServingPlan
from ms4fleet.weights.request import WeightsRequest
from ms4fleet_pyinfra.facts import held_packages, installed_packages, section_marker, upstream_version
from ms4fleet_pyinfra.hostscripts import python_command

VERIFIED_FILE = "/var/lib/ms4fleet/verified.json"


@dataclass(frozen=True)
class Desired:
    config: HostConfig
    provision: ProvisionPlan
    serving: ServingPlan
    weights: WeightsRequest

    @property
    def files(self) -> dict[str, str]:
        """Managed file path -> wanted sha256 (provisioning files and unit files)."""
        out = {f.path: f.sha256 for f in self.provision.files}
        for replica in self.serving.replicas:
            out[f"{paths.SYSTEMD_DIR}/{replica.unit_name}"] = hashlib.sha256(replica.unit_text.encode()).hexdigest()
        return out

    @property
    def secret_files(self) -> dict[str, str]:
        """Secrets this process supplies (env refs) -> sha256 of the file the host must hold."""
        out = {}
        for name, ref in service_secret_refs(self.config).values():
            if ref.env is not None:
                value = os.environ.get(ref.env, "")
                out[secret_path(ref, name)] = hashlib.sha256(f"{value}\n".encode()).hexdigest()
        return out

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(name for group in self.provision.packages() for name in group.names)

    @property
    def units(self) -> tuple[str, ...]:
        return tuple(r.unit_name for r in self.serving.replicas)

    @property
    def services(self) -> tuple[str, ...]:
        return (*self.provision.enabled_services, *self.units)


def snapshot_script(desired: Desired) -> str:
    q = shlex.quote
    checked = [*desired.files, *desired.secret_files, KEYRING, VERIFIED_FILE]
    request = desired.weights
    parts = [
        section_marker("dpkg"),
        "dpkg-query -W -f='${Package}\\t${Version}\\t${db:Status-Abbrev}\\n' "
        + " ".join(q(p) for p in desired.packages),
        section_marker("files"),
        f'for f in {" ".join(q(p) for p in checked)}; do [ -f "$f" ] && sha256sum "$f"; done',
        section_marker("daemon"),
        f"base64 -w0 {DAEMON_JSON} && echo",
        section_marker("services"),
        "systemctl show --property=Id,ActiveState,UnitFileState " + " ".join(q(s) for s in desired.services),
        section_marker("units"),
        f"ls {paths.SYSTEMD_DIR} | grep '^{paths.UNIT_PREFIX}-.*\\.service$'",
        section_marker("user"),
        f"getent passwd {q(desired.provision.service_user)} >/dev/null && echo yes",
        section_marker("image"),
        f"docker image inspect --format '{{{{.Id}}}}' {q(desired.config.runtime.image)}"
        if desired.config.runtime.kind == "docker"
        else "echo native",
        section_marker("weights"),
        python_command(
            "weights_verify.py",
            "verify",
            request.dest,
            "--repo",
            request.repo_id,
            "--revision",
            request.revision,
            "--json",
        ),
        section_marker("driver"),
        # The loaded module's own version: sysfs answers at once, nvidia-smi (seconds on 8 GPUs without
        # persistence mode) only where sysfs cannot.
        "cat /sys/module/nvidia/version || "
        "PATH=$PATH:/usr/local/nvidia/bin nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1",
    ]
    if service_secret_refs(desired.config):
        parts += [section_marker("env"), f"sh -c {q(env_file_script(desired.config, check=True))}"]
    return "\n".join(f"{part} 2>/dev/null" if not part.startswith("echo '") else part for part in parts) + "\n"


def differences(desired: Desired, sections: dict[str, list[str]]) -> list[str]:
    """What differs from the core's desired state; empty when the host is converged."""
    out: list[str] = []
    installed = installed_packages(sections.get("dpkg", []))
    out += [f"package {p} missing" for p in desired.packages if p not in installed]
    held = held_packages(sections.get("dpkg", []))
    out += [f"package {p} not held" for p in desired.provision.held if p not in held]
    hashes = {}
    for line in sections.get("files", []):
        digest, _, path = line.partition("  ")
        hashes[path.strip()] = digest
    wanted = {**desired.files, **desired.secret_files}
    out += [f"{path} differs" for path, digest in wanted.items() if hashes.get(path) != digest]
    out += [f"{path} missing" for path in (KEYRING, VERIFIED_FILE) if path not in hashes]
    if desired.config.runtime.kind == "docker":
        out += _daemon_difference(desired.config, sections.get("daemon", []))
        image = "".join(sections.get("image", [])).strip()
        out += [] if image.startswith("sha256:") else [f"image {desired.config.runtime.image} missing"]
    states = _unit_states(sections.get("services", []))
    out += [f"{s} not active" for s in desired.services if states.get(s, {}).get("ActiveState") != "active"]
    out += [f"{s} not enabled" for s in desired.services if states.get(s, {}).get("UnitFileState") != "enabled"]
    present = {line.strip() for line in sections.get("units", []) if line.strip()}
    out += [f"stale unit {u}" for u in sorted(present - set(desired.units))]
    if "yes" not in (line.strip() for line in sections.get("user", [])):
        out.append(f"user {desired.provision.service_user} missing")
    out += _weights_difference(sections.get("weights", []))
    if desired.provision.driver is not None:
        installed_driver = installed.get(desired.provision.driver.names[0])
        loaded = next((line.strip() for line in sections.get("driver", []) if line.strip()), None)
        version = upstream_version(installed_driver) if installed_driver else None
        # The OS's reboot-required flag matters only right after a driver change (the full deploy's job);
        # on an unchanged host only a loaded module other than the installed driver asks for a reboot.
        if needs_reboot(False, False, loaded, version):
            out.append(f"driver {version} installed, {loaded} loaded: reboot needed")
    if service_secret_refs(desired.config) and [s.strip() for s in sections.get("env", [])] != ["unchanged"]:
        out.append(f"{paths.ENV_FILE} differs")
    return out


def _unit_states(lines: list[str]) -> dict[str, dict[str, str]]:
    """``systemctl show`` output (one blank-line separated block per unit) -> ``{unit: {property: value}}``,
    keyed by the name as given and by its full ``Id`` (``docker`` and ``docker.service``)."""
    out: dict[str, dict[str, str]] = {}
    block: dict[str, str] = {}
    for line in [*lines, ""]:
        key, sep, value = line.strip().partition("=")
        if sep:
            block[key] = value
        elif block:
            unit = block.get("Id", "")
            out[unit] = out[unit.removesuffix(".service")] = block
            block = {}
    return out


def _daemon_difference(config: HostConfig, lines: list[str]) -> list[str]:
    try:
        current = base64.b64decode("".join(lines).strip(), validate=True).decode()
        return [] if daemon_json(current, config) == current else [f"{DAEMON_JSON} lacks ms4fleet's keys"]
    except (binascii.Error, UnicodeDecodeError, ConfigError):
        return [f"{DAEMON_JSON} unreadable or missing"]


def _weights_difference(lines: list[str]) -> list[str]:
    for line in reversed(lines):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        return [] if isinstance(report, dict) and report.get("ok") else ["weights not verified"]
    return ["weights not verified"]
