"""Is a host already exactly what the core wants? One batched, read-only command answers it, for both engines.

A converged host then gets a single no-op (pyinfra) or ends before its roles (Ansible) instead of ~35
operations that would each read their own facts: the no-op re-converge of a fleet costs one round trip per
host. Any difference, even one, runs the full deploy, whose operations re-read their facts and change only
what differs.

The snapshot starts with the host's fingerprint: the stat identity (size, inode, mtime, ctime, mode, owner)
of every file the rest of it reads, the boot and machine ids and the loaded driver. Once a full check has
passed, ``quick_script`` (fingerprint, unit states, image) proves the same verdict while the fingerprint is
unchanged (``verdicts`` keeps it on the controller): no package database, hashing or driver query.

+ ``snapshot_script(desired)`` and ``differences(desired, sections)``: the full check.
+ ``quick_script(desired)``, ``fingerprint(sections)`` and ``live_differences(desired, sections)``: the
  quick one; ``Desired.digest`` names what the core wanted when a verdict was stored.
+ ``check(name, config, plan_for, request, read)``: both in order, as every engine runs them; ``read`` runs
  a script on the host (with privileges) and returns its output by section (``hostoutput.sections``);
  ``plan_for(excluded)`` is the host's serving plan with those GPUs left out. The first read also runs the
  GPU health reader (``health_parts``): a converged host costs one round trip, health included, and a GPU
  that went bad since the last run makes the host unconverged (its replica must move).
+ ``check_data(name, config, data, read)``: ``check`` of the plan the host's inventory data makes (pyinfra's deploy
  and rollout).
+ ``verified_record(...)`` and ``record_command(record)``: what the verification gate leaves on the host.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ms4fleet
from ms4fleet import healthwatch, paths, verdicts
from ms4fleet.adopt import StackPlan
from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.health import Exclusion, HealthError, exclusions, parse_health
from ms4fleet.hostoutput import held_packages, installed_packages, section_marker, upstream_version
from ms4fleet.hostplan import DEFAULT_OS, plan_for_data, stack_for
from ms4fleet.hostscripts import python_command
from ms4fleet.probe import ProbeError, parse_probe
from ms4fleet.provision import (
    DAEMON_JSON,
    KEYRING,
    OsRelease,
    ProvisionPlan,
    daemon_json,
    needs_reboot,
    pinned_moves,
    provision_plan,
)
from ms4fleet.secrets import controller_value, env_file_script, secret_path, service_secret_refs
from ms4fleet.serving import ServingPlan
from ms4fleet.weights.request import WeightsRequest

VERIFIED_FILE = "/var/lib/ms4fleet/verified.json"
# dockerd's default API socket (the docker CLI's default too).
DOCKER_SOCKET = "/var/run/docker.sock"
# Files the full check reads besides the managed ones: packages and holds, the OS, the service user, and
# the unit directory (a unit added or removed changes its mtime).
STATE_FILES = ("/var/lib/dpkg/status", "/etc/os-release", "/etc/passwd", "/etc/group", paths.SYSTEMD_DIR)
# A verdict is only as good as the check that reached it: another check, another digest.
_CHECKER = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


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
        """Secrets this process supplies (env refs, the generated key) -> sha256 of the file the host must hold."""
        out = {}
        for name, ref in service_secret_refs(self.config).values():
            if ref.supplied:
                value = controller_value(ref, create=False) or ""
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

    @property
    def digest(self) -> str:
        """Everything the check compares the host against, and the check itself, in one sha256. Not the
        whole config: a setting the host does not hold (the mirror's URL) changes no verdict."""
        wanted = {
            "checker": [ms4fleet.__version__, _CHECKER],
            "daemon": daemon_json(None, self.config),
            "os": self.provision.os.key,
            "script": snapshot_script(self),
            "files": self.files,
            "secrets": self.secret_files,
            "held": self.provision.held,
        }
        return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def _fingerprint_parts(desired: Desired) -> list[str]:
    """Prints what identifies the state the full check reads: any change to that state prints otherwise."""
    q = shlex.quote
    # The secret files the service's env file is built from (supplied or the host's own) and that file.
    secrets = [secret_path(ref, name) for name, ref in service_secret_refs(desired.config).values()]
    env = [paths.ENV_FILE] if secrets else []
    checked = sorted({*STATE_FILES, *desired.files, *secrets, *env, KEYRING, VERIFIED_FILE, DAEMON_JSON})
    return [
        section_marker("fingerprint"),
        "cat /proc/sys/kernel/random/boot_id /etc/machine-id /sys/module/nvidia/version",
        # ctime cannot be set from user space: a write that restores size and mtime still changes it.
        "stat -L -c '%n|%s|%i|%y|%z|%a|%u|%g' " + " ".join(q(p) for p in checked),
        f"find -L {q(desired.weights.dest)} -printf '%p|%s|%i|%T@|%C@|%m|%u|%g\\n'",
    ]


def _live_parts(desired: Desired) -> list[str]:
    """What no file records: whether the units run, and whether the image is still there."""
    q = shlex.quote
    return [
        section_marker("services"),
        "systemctl show --property=Id,ActiveState,UnitFileState " + " ".join(q(s) for s in desired.services),
        section_marker("image"),
        image_query(desired.serving.image) if desired.serving.image is not None else "echo native",
    ]


def image_query(image: str) -> str:
    """Prints the image's inspect document, or nothing where Docker does not hold ``image``. Docker's Engine API
    through its socket first: curl costs a few ms of CPU, the docker CLI (a Go program) about 25, which a no-op
    re-converge pays on every host. The CLI answers where curl or the default socket is missing."""
    q = shlex.quote
    api = f"curl -sf --unix-socket {DOCKER_SOCKET} {q(f'http://docker/images/{image}/json')}"
    return f"{api} || docker image inspect --format '{{{{json .}}}}' {q(image)}"


def _script(parts: list[str]) -> str:
    return "\n".join(f"{part} 2>/dev/null" if not part.startswith("echo '") else part for part in parts) + "\n"


def quick_script(desired: Desired) -> str:
    """The fingerprint and the live parts only: enough when a stored verdict's fingerprint still matches."""
    return _script([*_fingerprint_parts(desired), *_live_parts(desired)])


def fingerprint(sections: dict[str, list[str]]) -> str | None:
    lines = sections.get("fingerprint")
    return None if not lines else hashlib.sha256("\n".join(lines).encode()).hexdigest()


def snapshot_script(desired: Desired) -> str:
    q = shlex.quote
    checked = [*desired.files, *desired.secret_files, KEYRING, VERIFIED_FILE]
    request = desired.weights
    # The fingerprint first: a change made while the rest runs then shows in the next run's fingerprint.
    parts = [
        *_fingerprint_parts(desired),
        section_marker("dpkg"),
        "dpkg-query -W -f='${Package}\\t${Version}\\t${db:Status-Abbrev}\\n' "
        + " ".join(q(p) for p in desired.packages),
        section_marker("files"),
        f'for f in {" ".join(q(p) for p in checked)}; do [ -f "$f" ] && sha256sum "$f"; done',
        section_marker("daemon"),
        f"base64 -w0 {DAEMON_JSON} && echo",
        *_live_parts(desired),
        section_marker("units"),
        f"ls {paths.SYSTEMD_DIR} | grep '^{paths.UNIT_PREFIX}-.*\\.service$'",
        section_marker("user"),
        f"getent passwd {q(desired.provision.service_user)} >/dev/null && echo yes",
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
    return _script(parts)


def differences(desired: Desired, sections: dict[str, list[str]]) -> list[str]:
    """What differs from the core's desired state; empty when the host is converged."""
    out: list[str] = []
    installed = installed_packages(sections.get("dpkg", []))
    out += [f"package {p} missing" for p in desired.packages if p not in installed]
    moves = pinned_moves(desired.provision.group_pins(), installed)
    out += [f"package {p} at {installed[p]}, not the pinned version" for p in moves]
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
    out += live_differences(desired, sections)
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


def live_differences(desired: Desired, sections: dict[str, list[str]]) -> list[str]:
    """The parts no fingerprint covers: the image is present, every unit active and enabled."""
    out: list[str] = []
    if desired.serving.image is not None and not image_id(sections.get("image", [])).startswith("sha256:"):
        out.append(f"image {desired.serving.image} missing")
    states = _unit_states(sections.get("services", []))
    out += [f"{s} not active" for s in desired.services if states.get(s, {}).get("ActiveState") != "active"]
    out += [f"{s} not enabled" for s in desired.services if states.get(s, {}).get("UnitFileState") != "enabled"]
    return out


def image_id(lines: list[str]) -> str:
    """The ``Id`` of ``image_query``'s document ("" where there is none)."""
    try:
        document = json.loads("".join(lines))
    except ValueError:
        return ""
    return str(document.get("Id", "")) if isinstance(document, dict) else ""


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


@dataclass(frozen=True)
class Check:
    """A converged check's answer. ``os`` is the host's OS when the check read it (None: unknown);
    ``quick`` says a stored verdict was confirmed instead of the full check being run; ``excluded`` the GPUs
    the health reading excludes now (the plan to apply is ``plan_for(excluded)``), ``health_error`` why
    there is no reading (no driver yet: every GPU planned); ``stack`` the core's decision for what the host
    already has, from the probe the full check runs (None after a quick check or without a probe)."""

    differences: tuple[str, ...]
    os: OsRelease | None
    excluded: tuple[Exclusion, ...] = ()
    health_error: str = ""
    quick: bool = False
    stack: StackPlan | None = None

    @property
    def converged(self) -> bool:
        return not self.differences

    @property
    def health_warning(self) -> str:
        """Why a converged host's GPU health is unknown ("" when it was read, or while the host is not
        converged: before its driver is in, no reading is expected). Every GPU stays planned and nothing
        restarts for it; the gate before any (re)start reads again and refuses a host it cannot read."""
        if not (self.health_error and self.converged):
            return ""
        return f"GPU health unreadable on a converged host ({self.health_error}): every GPU stays planned"


def health_parts() -> list[str]:
    """The GPUs' health, as a part of the check's first read: the host's kept reading while fresh, else the
    core's reader run now (``healthwatch.read_command``)."""
    return [section_marker("health"), healthwatch.read_command(python_command("health.py"))]


def probe_parts() -> list[str]:
    """The core's host probe, as a part of the full check's first read (what the host already has)."""
    return [section_marker("probe"), python_command("probe.py")]


def _stack(found: dict[str, list[str]], config: HostConfig) -> StackPlan | None:
    try:
        report = parse_probe("\n".join(found.get("probe", [])), config.name)
    except ProbeError:
        return None  # no probe answer: planned as before any probe
    return stack_for(config, report)


def _health(found: dict[str, list[str]], name: str, gpu_count: int) -> tuple[tuple[Exclusion, ...], str]:
    try:
        return exclusions(parse_health("\n".join(found.get("health", [])), name), gpu_count), ""
    except HealthError as err:
        return (), str(err)


def _first_read(
    name: str,
    config: HostConfig,
    plan_for: Callable[[tuple[Exclusion, ...]], ServingPlan],
    request: WeightsRequest,
    quick: bool,
) -> tuple[verdicts.Verdict | None, Desired | None, str]:
    """The stored verdict, the plan to confirm it against (None: the full check runs) and the first script."""
    known = verdicts.load(name) if quick else None
    if known is not None:
        # Planned with the exclusions of the verdict's day: a host that has not changed answers that plan.
        desired = Desired(config, provision_plan(config, known.os), plan_for(known.excluded), request)
        if desired.digest == known.digest:
            return known, desired, quick_script(desired) + _script(health_parts())
    return known, None, _full_first_read(config, plan_for, request, known.excluded if known else (), health=True)


def _full_first_read(
    config: HostConfig,
    plan_for: Callable[[tuple[Exclusion, ...]], ServingPlan],
    request: WeightsRequest,
    assumed: tuple[Exclusion, ...],
    health: bool,
) -> str:
    first = (_script(health_parts()) if health else "") + _script(probe_parts())
    script = _assumed_snapshot(config, plan_for, request, assumed)
    return f"{section_marker('os')}\ncat /etc/os-release\n{first}{script}"


def _assumed_snapshot(
    config: HostConfig,
    plan_for: Callable[[tuple[Exclusion, ...]], ServingPlan],
    request: WeightsRequest,
    assumed: tuple[Exclusion, ...],
) -> str:
    # Built for the OS a plan assumes before a host is read: the script lists paths, packages and units,
    # which no supported OS changes (the OS changes what the answers must be).
    return snapshot_script(Desired(config, provision_plan(config, DEFAULT_OS), plan_for(assumed), request))


def check(
    name: str,
    config: HostConfig,
    plan_for: Callable[[tuple[Exclusion, ...]], ServingPlan],
    request: WeightsRequest,
    read: Callable[[str], dict[str, list[str]]],
    quick: bool = True,
) -> Check:
    """The quick check where a stored verdict still applies (and ``quick``), else the full one (which stores
    or forgets the verdict), the GPU health read in the first round trip. At most two reads; a host whose OS
    cannot be read is not converged. Raises ``ConfigError`` for an OS the core does not support."""
    health: tuple[tuple[Exclusion, ...], str] | None = None
    known, confirming, first = _first_read(name, config, plan_for, request, quick)
    assumed = known.excluded if known is not None else ()
    if known is not None and confirming is not None:
        found = read(first)
        health = _health(found, name, config.gpu.count)
        now = Desired(config, confirming.provision, plan_for(health[0]), request)
        if now.digest == known.digest and fingerprint(found) == known.fingerprint and not live_differences(now, found):
            return Check((), known.os, *health, quick=True)
        assumed = health[0]
        first = _full_first_read(config, plan_for, request, assumed, health=False)
    found = read(first)
    if health is None:
        health = _health(found, name, config.gpu.count)
    os_release = OsRelease.parse("\n".join(found.get("os", [])))
    if not os_release.id:
        verdicts.forget(name)
        return Check(("/etc/os-release unreadable",), None, *health)
    # What the host already has decides the driver and Docker (a refusal raises ConfigError here, one line).
    stack = _stack(found, config)
    desired = Desired(config, provision_plan(config, os_release, stack), plan_for(health[0]), request)
    if snapshot_script(desired) != _assumed_snapshot(config, plan_for, request, assumed):
        found = read(snapshot_script(desired))
    diffs = tuple(differences(desired, found))
    printed = fingerprint(found)
    if diffs:
        verdicts.forget(name)
    elif printed is not None:
        verdicts.store(name, verdicts.Verdict(desired.digest, os_release, printed, health[0]))
    return Check(diffs, os_release, *health, stack=stack)


def check_data(
    name: str,
    config: HostConfig,
    data: Mapping[str, Any],
    read: Callable[[str], dict[str, list[str]]],
    quick: bool = True,
) -> Check:
    """``check`` of the plan ``hostplan.plan_for_data`` makes from the host's inventory ``data``."""
    return check(name, config, *_data_plans(config, data), read, quick)


def first_read_data(name: str, config: HostConfig, data: Mapping[str, Any], quick: bool = True) -> str:
    """The script ``check_data`` reads first (the verdict store as it is now): an engine can send it early."""
    return _first_read(name, config, *_data_plans(config, data), quick)[2]


def _data_plans(
    config: HostConfig, data: Mapping[str, Any]
) -> tuple[Callable[[tuple[Exclusion, ...]], ServingPlan], WeightsRequest]:
    return (
        lambda excluded: plan_for_data(config, data, excluded=excluded).serving,
        plan_for_data(config, data).require_weights().request,
    )


def verified_record(model: str, checks: list[str], replicas: list[dict[str, object]]) -> str:
    """The bytes the verification gate leaves in ``VERIFIED_FILE`` once every replica passed."""
    return json.dumps({"model": model, "checks": sorted(checks), "replicas": replicas}, sort_keys=True) + "\n"


def record_command(record: str) -> str:
    """A shell command that writes ``record`` to ``VERIFIED_FILE`` (world-readable: it holds no secret)."""
    encoded = base64.b64encode(record.encode()).decode("ascii")
    return (
        f"umask 022 && mkdir -p {shlex.quote(os.path.dirname(VERIFIED_FILE))} && "
        f"echo {encoded} | base64 -d > {shlex.quote(VERIFIED_FILE)}"
    )
