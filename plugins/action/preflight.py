"""Action ``ms4fleet.fleet.preflight``: the core's inventory validation and controller checks, before any host
is touched.

The core validates every host of the run together (``ms4fleet.inventory.validate_hosts``: each host's
``ms4fleet_*`` variables as the roles will read them, the fleet-wide rules, and for a run that serves, the
weights section and every secret referenced by a controller environment variable). The core also decides what
a deploy by the Ansible engine needs on the controller (``deploy_uses``); this action only says whether the run
stages weights and whether any of its hosts is reached over SSH. The first problem fails the task with the
core's one line (``ms4fleet: HOST: FIELD ...`` or ``ms4fleet: controller: ...``).
"""

from __future__ import annotations

from typing import Any

from ansible.constants import DEFAULT_TRANSPORT
from ansible.errors import AnsibleActionFail
from ansible_collections.ms4fleet.fleet.plugins.modules.preflight import DOCUMENTATION
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.action import CoreAction
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.argspec import from_documentation
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.hostplan import host_data

from ms4fleet.config import KEY_PREFIX, ConfigError
from ms4fleet.controller import ControllerError, deploy_uses, require_controller
from ms4fleet.inventory import RawHost, validate_hosts
from ms4fleet.rollout import lb
from ms4fleet_ansible.inventory import group_settings


class ActionModule(CoreAction):
    ARGUMENT_SPEC = from_documentation(DOCUMENTATION)
    _requires_connection = False

    def act(self, result: dict[str, Any], args: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        names = args["hosts"] if args["hosts"] is not None else variables.get("groups", {}).get("all", [])
        hostvars = variables.get("hostvars", {})
        if args["validate"]:
            try:
                validate_hosts(self._raw_hosts(hostvars, args["validate"]), deploying=args["weights"])
            except ConfigError as err:
                raise AnsibleActionFail(f"ms4fleet: {err}") from None
        remote = any(self._connection_of(hostvars, str(name)) != "local" for name in names)
        try:
            checks = require_controller(deploy_uses("ansible", weights=args["weights"], remote=remote), ["ansible"])
        except ControllerError as err:
            raise AnsibleActionFail(f"ms4fleet: {err}") from None
        result.update(changed=False, checks=[check.to_dict() for check in checks])
        return result

    def _raw_hosts(self, hostvars: Any, names: list[str]) -> list[RawHost]:
        """Each host's ``ms4fleet_*`` variables as the roles will read them (templated hostvars, extra vars
        included) and what each of its groups says on its own (for ties between groups)."""
        manager = self._task.get_variable_manager()
        inventory = manager._inventory  # the play's own inventory (no public accessor)
        extra = frozenset(k for k in manager.extra_vars if str(k).startswith(KEY_PREFIX))
        hosts = []
        for name in names:
            host = inventory.get_host(name)
            settings, own = group_settings(inventory, self._loader, host)
            groups = tuple(g.name for g in host.get_groups() if g.name not in {"all", "ungrouped"})
            # Besides the settings, what places the host: its SSH address and the load balancer's address.
            variables = hostvars[name]
            placing = {k: variables[k] for k in ("ansible_host", "ansible_port", lb.ADDRESS_KEY) if k in variables}
            hosts.append(RawHost(name, groups, {**host_data(variables), **placing}, settings, own | extra))
        return hosts

    @staticmethod
    def _connection_of(hostvars: Any, name: str) -> str:
        """The host's connection plugin, short name (``ansible.builtin.local`` -> ``local``)."""
        variables = hostvars.get(name) or {}
        return str(variables.get("ansible_connection") or DEFAULT_TRANSPORT).split(".")[-1]
