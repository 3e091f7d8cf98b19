"""Controller-side glue between Ansible variables and the ms4fleet core (imported by the filters and actions).

Nothing here decides: it reads a host's ``ms4fleet_*`` variables into the core's ``HostConfig``, asks the
core for its plans and hands them back as plain data Ansible can loop over. The core is the
``ms4fleet`` package installed next to ansible-core on the controller; hosts need only python3.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import core  # noqa: F401 (before the core)

from ms4fleet import paths
from ms4fleet.config import KEY_PREFIX, SECTIONS, HostConfig
from ms4fleet.provision import (
    DAEMON_JSON,
    KEYRING,
    NOUVEAU_FILE,
    PREFERENCES_FILE,
    REBOOT_REQUIRED,
    SOURCES_FILE,
    OsRelease,
    ProvisionPlan,
    provision_plan,
)
from ms4fleet.secrets import env_file_script, secret_path, service_secret_refs
from ms4fleet.serving import ServingPlan, plan_host
from ms4fleet.weights.startcheck import verifier_file

# Which role writes each managed file of the provision plan (by the core's path constants).
# A file the core adds later lands as "other", which the nvidia_driver role refuses (a role must own it).
FILE_KINDS = {
    SOURCES_FILE: "repository",
    PREFERENCES_FILE: "pin",
    NOUVEAU_FILE: "nouveau",
    verifier_file()[0]: "weights-verifier",
}

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


def provision_dict(plan: ProvisionPlan, config: HostConfig) -> dict[str, Any]:
    """The provision plan as Ansible data: package groups by role, managed files with bytes and mode."""

    def group(packages: Any) -> dict[str, Any] | None:
        return None if packages is None else {"names": list(packages.names), "hold": packages.hold}

    repo = plan.nvidia_repo
    return {
        "os": {"id": plan.os.id, "version_id": plan.os.version_id, "key": plan.os.key},
        "nvidia_repo": {
            "url": repo.url,
            "suite": repo.suite,
            "components": list(repo.components),
            "key_url": repo.key_url,
        },
        "base": group(plan.base),
        "driver": group(plan.driver),
        "fabric_manager": group(plan.fabric_manager),
        "cuda": group(plan.cuda),
        "docker": group(plan.docker),
        "container_toolkit": group(plan.container_toolkit),
        "held": list(plan.held),
        "files": [
            {
                "path": f.path,
                "content": f.content,
                "mode": f"{f.mode:04o}",
                "owner": f.owner,
                "group": f.group,
                "sha256": f.sha256,
                "kind": FILE_KINDS.get(f.path, "other"),
            }
            for f in plan.files
        ],
        "enabled_services": list(plan.enabled_services),
        "service_user": plan.service_user,
        "driver_version": plan.driver_version,
        "persistence_mode": config.provision.persistence_mode,
        "reboot": config.provision.reboot,
        "runtime": config.runtime.kind,
        "notes": list(plan.notes),
        "paths": {
            "keyring": KEYRING,
            "sources": SOURCES_FILE,
            "daemon_json": DAEMON_JSON,
            "reboot_required": REBOOT_REQUIRED,
        },
    }


def provision(variables: Mapping[str, Any], facts: Mapping[str, Any]) -> dict[str, Any]:
    config = host_config(variables)
    return provision_dict(provision_plan(config, os_release(facts)), config)


def serving_dict(plan: ServingPlan, config: HostConfig) -> dict[str, Any]:
    """The serving plan as Ansible data: replicas with their unit names and exact unit bytes."""
    weights = config.weights
    return {
        "host": plan.host,
        "model": plan.profile.id,
        "served_model_name": plan.served_model_name,
        "tp": plan.tp,
        "max_model_len": plan.max_model_len,
        "model_dir": plan.model_dir,
        "verdict": plan.verdict,
        "reasons": list(plan.sizing.reasons),
        "warnings": list(plan.warnings),
        "runtime": config.runtime.kind,
        "image": plan.image,
        "service_user": config.provision.service_user,
        "weights_configured": weights is not None,
        "env_file": paths.ENV_FILE,
        "unit_prefix": paths.UNIT_PREFIX,
        "replicas": [
            {
                "index": r.index,
                "gpus": list(r.gpus),
                "port": r.port,
                "unit_name": r.unit_name,
                "unit_path": f"{paths.SYSTEMD_DIR}/{r.unit_name}",
                "container_name": r.container_name,
                "unit_text": r.unit_text,
            }
            for r in plan.replicas
        ],
    }


def serving(variables: Mapping[str, Any]) -> dict[str, Any]:
    config = host_config(variables)
    return serving_dict(plan_host(config), config)


def secrets(variables: Mapping[str, Any]) -> dict[str, Any]:
    """What the host's service secrets need: uploads of controller env-var secrets (path, variable) and
    the core's env-file script. Values never pass through here: the role reads them under no_log."""
    config = host_config(variables)
    refs = service_secret_refs(config)
    uploads = [
        {"name": name, "env": ref.env, "path": secret_path(ref, name)}
        for name, ref in refs.values()
        if ref.env is not None
    ]
    return {
        # No secrets, no environment file: the unit names one only when the service has secrets.
        "needed": bool(refs),
        "secrets_dir": paths.SECRETS_DIR,
        "uploads": uploads,
        "env_file": paths.ENV_FILE,
        "script": env_file_script(config),
    }


def task_host_config(templar: Any, task_vars: Mapping[str, Any]) -> HostConfig:
    """The host's config inside an action plugin: its ``ms4fleet_*`` task variables, templated."""
    data = {key: _plain(templar.template(task_vars[key])) for key in list(task_vars) if str(key).startswith(KEY_PREFIX)}
    return HostConfig.from_host_data(str(task_vars.get("inventory_hostname", "?")), data)
