"""Controller-side glue between Ansible variables and the ms4fleet core (imported by the filters and actions).

Nothing here decides: it reads a host's ``ms4fleet_*`` variables into the core's ``HostConfig``, asks the
core for the host's ``HostPlan`` and hands back parts of its ``to_json()``, keyed the way the roles read
them. The core is the ``ms4fleet`` package installed next to ansible-core on the controller; hosts need only
python3.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import core  # noqa: F401 (before the core)

from ms4fleet import apikey, healthwatch, paths
from ms4fleet.config import KEY_PREFIX, SECTIONS, HostConfig
from ms4fleet.health import exclusions_from_json
from ms4fleet.hostoutput import DPKG_FORMAT
from ms4fleet.hostplan import IMAGE_ARCHIVE_KEYS, STAGING_DIR_KEYS, plan_for_data, stack_for
from ms4fleet.kernels import BOOT_MODULES_SCRIPT
from ms4fleet.probe import ProbeError, ProbeReport, parse_probe
from ms4fleet.provision import APT_LOCK_TIMEOUT_S, DAEMON_JSON, OsRelease
from ms4fleet.proxy import PROXY_SERVICE

# The package groups of the plan, by the names the roles read.
PACKAGE_GROUPS = ("base", "driver", "fabric_manager", "cuda", "docker", "container_toolkit")

# The os_vars role's registered probe (``ms4fleet.fleet.probe``): what the host already has, for every role.
PROBE_VARIABLE = "os_vars_probe"

# Keys of a host's variables the core reads (all others are Ansible's or other roles').
CONFIG_KEYS = tuple(f"{KEY_PREFIX}{section}" for section in SECTIONS)


def _plain(value: Any) -> Any:
    """Ansible's tagged/lazy containers as plain JSON data (what the core validates)."""
    return json.loads(json.dumps(value, default=str))


def host_data(variables: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ms4fleet_*`` keys of a host's variables; a misspelt ``ms4fleet_`` key is kept so the core
    names it (``ms4fleet_provison is not an ms4fleet setting; did you mean ms4fleet_provision?``)."""
    return {key: _plain(variables[key]) for key in list(variables) if str(key).startswith(KEY_PREFIX)}


def host_config(variables: Mapping[str, Any], name: str | None = None) -> HostConfig:
    """Validate a host's variables (``hostvars[inventory_hostname]``); raises ``ConfigError`` (one line)."""
    host = name or str(variables.get("inventory_hostname", "?"))
    return HostConfig.from_host_data(host, host_data(variables))


def os_release(facts: Mapping[str, Any]) -> OsRelease:
    """The host's /etc/os-release ID and VERSION_ID from Ansible's facts (``distribution*``)."""
    distribution = str(facts.get("distribution", "")).lower()
    # VERSION_ID is "24.04" on Ubuntu but "12" on Debian, whose distribution_version is the point release.
    version = facts.get("distribution_major_version") if distribution == "debian" else facts.get("distribution_version")
    return OsRelease(distribution, str(version or ""))


def host_plan(
    variables: Mapping[str, Any],
    facts: Mapping[str, Any] | None = None,
    image_archive: str | None = None,
    excluded: Any = None,
) -> dict[str, Any]:
    """The core's ``HostPlan`` of this host as JSON data: for the OS in ``facts`` (the core's default OS
    without them: only OS-independent parts may then be read), with the role's image archive if any, and
    replicas only on GPUs ``excluded`` (the ``gpu_health`` module's ``excluded``) leaves out."""
    config = host_config(variables)
    left_out = exclusions_from_json(_plain(excluded), config.name)
    data = {key: _plain(variables[key]) for key in (*IMAGE_ARCHIVE_KEYS, *STAGING_DIR_KEYS) if variables.get(key)}
    if image_archive:
        data[IMAGE_ARCHIVE_KEYS[-1]] = image_archive
    os = os_release(facts) if facts is not None else None
    return plan_for_data(config, data, os, left_out, stack_for(config, probe_report(variables))).to_json()


def probe_report(variables: Mapping[str, Any]) -> ProbeReport | None:
    """The host's probe report, where the os_vars role registered one this play (None before it ran)."""
    registered = variables.get(PROBE_VARIABLE)
    report = registered.get("probe") if isinstance(registered, Mapping) else None
    if not isinstance(report, Mapping):
        return None
    try:
        return parse_probe(json.dumps(_plain(report)), str(variables.get("inventory_hostname", "")))
    except ProbeError:
        return None


def provision(variables: Mapping[str, Any], facts: Mapping[str, Any]) -> dict[str, Any]:
    """The provisioning part of the host's plan, keyed the way the roles read it (package groups by name)."""
    plan = host_plan(variables, facts)
    config = host_config(variables)
    groups = {g["group"]: {"names": g["names"], "hold": g["hold"], "pins": g["pins"]} for g in plan["packages"]}
    merged = {f["kind"]: f["path"] for f in plan["merged_files"]}
    return {
        "os": plan["os"],
        "nvidia_repo": {k: plan["apt"][k] for k in ("url", "suite", "components", "key_url", "key_fingerprint")},
        **{name: groups.get(name) for name in PACKAGE_GROUPS},
        "held": plan["held"],
        "files": [f for f in plan["files"] if f["kind"] != "unit"],
        "enabled_services": [u["name"] for u in plan["units"] if u["role"] == "provision"],
        "service_user": plan["service_user"]["name"],
        "service_shell": plan["service_user"]["shell"],
        "proxy_service": PROXY_SERVICE,
        "health_timer": healthwatch.TIMER,
        # What the driver and the fabric manager are pinned to: the host's own where the core left its driver
        # alone; nothing when the driver is unmanaged and the host was not probed.
        "driver_version": plan["stack"]["driver_version"]
        if plan.get("stack")
        else (config.provision.driver_version if config.provision.manage_driver else None),
        "reboot": plan["reboot"]["policy"],
        "dpkg_format": DPKG_FORMAT,
        # Seconds apt waits for the dpkg lock (every apt task's lock_timeout), as pyinfra's installs wait.
        "apt_lock_timeout": APT_LOCK_TIMEOUT_S,
        "runtime": plan["runtime"],
        "notes": plan["notes"],
        # What the host had and the core's decision (absent before the probe ran), and a takeover's uninstall.
        "stack": plan.get("stack"),
        "driver_before_install": (plan.get("stack") or {}).get("before_driver_install", []),
        # Run right before a driver reboot: the kernel that boots next must have the driver's module.
        "boot_modules_script": BOOT_MODULES_SCRIPT,
        "paths": {
            "keyring": plan["apt"]["keyring"],
            "sources": plan["apt"]["sources_file"],
            "daemon_json": merged.get("daemon-json", DAEMON_JSON),
            "reboot_required": plan["reboot"]["reboot_required_file"],
        },
    }


def serving(variables: Mapping[str, Any], image_archive: str | None = None, excluded: Any = None) -> dict[str, Any]:
    """The serving part of the host's plan: replicas with their unit paths and exact unit bytes, the image and
    how it is obtained, and (``health``) the GPUs excluded and the replicas left out with why."""
    plan = host_plan(variables, image_archive=image_archive, excluded=excluded)
    units = {f["path"]: f["content"] for f in plan["files"] if f["kind"] == "unit"}
    return {
        "host": plan["host"],
        **plan["serving"],
        "runtime": plan["runtime"],
        "image": plan["image"]["ref"],
        "image_obtain": plan["image"]["obtain"],
        "image_archive": plan["image"]["archive"],
        "image_id": plan["image"]["id"],
        "service_user": plan["service_user"]["name"],
        "service_shell": plan["service_user"]["shell"],
        "weights_configured": plan["weights"] is not None,
        "env_file": plan["secrets"]["env_file"]["path"],
        "unit_prefix": paths.UNIT_PREFIX,
        "units_dir": paths.SYSTEMD_DIR,
        "replicas": [{**r, "unit_text": units[r["unit_path"]]} for r in plan["replicas"]],
        "health": plan.get("health", {"excluded_gpus": [], "missing_replicas": []}),
    }


def secrets(variables: Mapping[str, Any]) -> dict[str, Any]:
    """What the host's service secrets need: uploads of controller env-var secrets (path, variable), of the
    controller's generated API key (its file, made now if missing), and the core's env-file script. Values
    never pass through here: the role reads them under no_log."""
    plan = host_plan(variables)["secrets"]
    generated = [r for r in plan["refs"] if r["generated"]]
    source = str(apikey.ensure_key()) if generated else None
    return {
        # No secrets, no environment file: the unit names one only when the service has secrets.
        "needed": plan["needed"],
        "secrets_dir": plan["secrets_dir"],
        "uploads": [
            {"name": r["name"], "env": r["env"], "path": r["host_path"]} for r in plan["refs"] if r["env"] is not None
        ],
        "generated": [{"name": r["name"], "source": source, "path": r["host_path"]} for r in generated],
        "env_file": plan["env_file"]["path"],
        "script": plan["script"],
    }


def task_host_config(templar: Any, task_vars: Mapping[str, Any]) -> HostConfig:
    """The host's config inside an action plugin: its ``ms4fleet_*`` task variables, templated."""
    data = {key: _plain(templar.template(task_vars[key])) for key in list(task_vars) if str(key).startswith(KEY_PREFIX)}
    return HostConfig.from_host_data(str(task_vars.get("inventory_hostname", "?")), data)


# What the core's ``target_for`` reads of a host besides its ``ms4fleet_*`` keys (how to reach it over SSH).
_REACH_KEYS = frozenset(
    {
        *("ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file", "ansible_connection"),
        *("ansible_ssh_common_args", "ansible_ssh_extra_args", "ssh_known_hosts_file"),
    }
)


def plain_host_data(templar: Any, variables: Mapping[str, Any]) -> dict[str, Any]:
    """Another host's ``ms4fleet_*`` and connection variables (``hostvars[name]``), templated: for actions run
    once for many hosts."""
    return {
        key: _plain(templar.template(variables[key]))
        for key in list(variables)
        if str(key).startswith(KEY_PREFIX) or key in _REACH_KEYS
    }
