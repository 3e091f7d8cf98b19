"""The functions behind the filters of ``plugins/filter/plan.py`` (imported only once ``requirement`` is met).

See that module for what each filter is for; nothing is decided here but in the ms4fleet core.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import (
    core,  # noqa: F401 (before the core)
    hostplan,
)

from ms4fleet import hostkeys, kernels
from ms4fleet import provision as core_provision
from ms4fleet.hostoutput import installed_packages


def provision_plan(variables: Mapping[str, Any], facts: Mapping[str, Any]) -> dict[str, Any]:
    return hostplan.provision(variables, facts)


def serving_plan(
    variables: Mapping[str, Any], image_archive: str | None = None, excluded: Any = None
) -> dict[str, Any]:
    return hostplan.serving(variables, image_archive or None, excluded)


def service_secrets(variables: Mapping[str, Any]) -> dict[str, Any]:
    return hostplan.secrets(variables)


def daemon_json(current: str | None, variables: Mapping[str, Any]) -> str:
    return core_provision.daemon_json(current or None, hostplan.host_config(variables))


def daemon_json_apply(desired: str, current: str | None) -> str:
    """How dockerd takes ``desired`` (the core's decision: none, reload or restart)."""
    return core_provision.daemon_json_apply(current or None, desired)


def released_holds(held: list[str] | None, plan: Mapping[str, Any]) -> list[str]:
    """The holds to release before the plan's held groups install (``plan``: a role's provision plan)."""
    groups = {
        name: list(group["names"])
        for name in core_provision.HOLD_FAMILIES
        if (group := plan.get(name)) and group.get("hold")
    }
    return list(core_provision.released_holds(groups, held or []))


def _pins(plan: Mapping[str, Any]) -> dict[str, list[core_provision.Pin]]:
    return {
        name: [core_provision.Pin(tuple(p["names"]), p["version"]) for p in found.get("pins", [])]
        for name in core_provision.PINNED_GROUPS
        if (found := plan.get(name))
    }


def pinned_moves(lines: list[str] | None, plan: Mapping[str, Any], group: str | None = None) -> list[str]:
    """The held packages to install at their pin (``lines``: dpkg-query with the plan's ``dpkg_format``;
    ``group``: only that group's packages)."""
    only = (plan.get(group) or {}).get("names", []) if group else None
    return list(core_provision.pinned_moves(_pins(plan), installed_packages(lines or []), only))


def pinned_move_script(moves: list[str], plan: Mapping[str, Any]) -> str:
    """The core's shell that installs ``moves`` at their pin, refused with one line when a pinned build is in
    no apt source."""
    return core_provision.move_script(_pins(plan), moves)


def reboot_refusal(lines: list[str] | None) -> str:
    """The core's one-line refusal to reboot into a kernel without the driver's module, or ""."""
    return kernels.reboot_refusal(kernels.parse_boot_modules(lines or [])) or ""


def ssh_host_key_args(flag: Any, extra_args: str | None) -> str:
    """The host's ``ansible_ssh_extra_args`` with the core's StrictHostKeyChecking first (ssh keeps the first)."""
    ours = f"-o StrictHostKeyChecking={hostkeys.checking(flag)}"
    if not extra_args or extra_args == ours:
        return ours
    # Every playbook of a run (site.yml imports them) sets it again: once is enough.
    return extra_args if extra_args.startswith(f"{ours} ") else f"{ours} {extra_args}"


def needs_reboot(driver_changed: bool, reboot_required: bool, loaded: str | None, installed: str | None) -> bool:
    return core_provision.needs_reboot(bool(driver_changed), bool(reboot_required), loaded or None, installed or None)
