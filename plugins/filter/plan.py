"""Filters that render the ms4fleet core's decisions for the roles (controller side, no decision here).

+ ``hostvars[inventory_hostname] | ms4fleet.fleet.provision_plan(ansible_facts)``: packages by group, holds,
  managed files (bytes, mode, owner), services to enable, reboot policy.
+ ``hostvars[inventory_hostname] | ms4fleet.fleet.serving_plan``: replicas, unit names and unit bytes.
+ ``hostvars[inventory_hostname] | ms4fleet.fleet.service_secrets``: secret uploads and the env-file script.
+ ``current_text | ms4fleet.fleet.daemon_json(hostvars[inventory_hostname])``: daemon.json merged.
+ ``desired_text | ms4fleet.fleet.daemon_json_apply(current_text)``: how dockerd takes it (none, reload,
  restart).
+ ``held_lines | ms4fleet.fleet.released_holds(plan)``: holds to release before the plan's held groups install.
+ ``dpkg_lines | ms4fleet.fleet.pinned_moves(plan)``: held driver / fabric manager packages at another version
  than their pin, to install at it; ``moves | ms4fleet.fleet.pinned_move_script(plan)``: the shell that does
  (refused with one line when a pinned build is in no apt source).
+ ``driver_changed | ms4fleet.fleet.needs_reboot(reboot_required, loaded, installed)``.
+ ``boot_kernels.stdout_lines | ms4fleet.fleet.reboot_refusal``: why not to reboot now (the kernel that boots
  next has no NVIDIA module), or "".
+ ``ms4fleet_ssh_accept_new | ms4fleet.fleet.ssh_host_key_args(ansible_ssh_extra_args)``: the extra ssh args
  with the core's StrictHostKeyChecking (``ms4fleet.hostkeys``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.requirement import core_filters

NAMES = (
    "provision_plan",
    "serving_plan",
    "service_secrets",
    "daemon_json",
    "daemon_json_apply",
    "released_holds",
    "pinned_moves",
    "pinned_move_script",
    "needs_reboot",
    "reboot_refusal",
    "ssh_host_key_args",
)


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return core_filters("plan_filters", NAMES)
