"""Action ``ms4fleet.fleet.preflight``: the core's controller checks (``ms4fleet.controller``), before any host
is touched.

The core decides what a deploy by the Ansible engine needs on the controller (``deploy_uses``); this action
only says whether the run stages weights and whether any of its hosts is reached over SSH, then fails with
the core's one line (``ms4fleet: controller: ...``) for the first check that fails.
"""

from __future__ import annotations

from typing import Any

import yaml
from ansible.constants import DEFAULT_TRANSPORT
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.ms4fleet.fleet.plugins.modules.preflight import DOCUMENTATION
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import core  # noqa: F401 (before the core)

from ms4fleet.controller import ControllerError, deploy_uses, require_controller

# The options as documented in plugins/modules/preflight.py (written once, there).
ARGUMENT_SPEC = {
    name: {key: value for key, value in option.items() if key in ("type", "elements", "default", "required")}
    for name, option in yaml.safe_load(DOCUMENTATION)["options"].items()
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        variables = task_vars or {}
        names = args["hosts"] if args["hosts"] is not None else variables.get("groups", {}).get("all", [])
        hostvars = variables.get("hostvars", {})
        remote = any(self._connection_of(hostvars, str(name)) != "local" for name in names)
        try:
            checks = require_controller(deploy_uses("ansible", weights=args["weights"], remote=remote), ["ansible"])
        except ControllerError as err:
            raise AnsibleActionFail(f"ms4fleet: {err}") from None
        result.update(changed=False, checks=[check.to_dict() for check in checks])
        return result

    @staticmethod
    def _connection_of(hostvars: Any, name: str) -> str:
        """The host's connection plugin, short name (``ansible.builtin.local`` -> ``local``)."""
        variables = hostvars.get(name) or {}
        return str(variables.get("ansible_connection") or DEFAULT_TRANSPORT).split(".")[-1]
