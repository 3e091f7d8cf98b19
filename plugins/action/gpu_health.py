"""Action ``ms4fleet.fleet.gpu_health``: read every GPU's health ON the host; the core judges it.

The reader is one standard-library file of the core (``ms4fleet/hostside/health.py``), piped to the host's
python3 over the task's connection (nothing is copied or left on the host); its readings are judged by the
core (``ms4fleet.health.parse_health``): the same rules the pyinfra fact ``GpuHealth`` applies.
Read-only: safe in check mode. With ``fail_on_unhealthy`` the task fails naming each excluded GPU.
"""

from __future__ import annotations

import shlex
from typing import Any, ClassVar

from ansible.errors import AnsibleActionFail
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.action import CoreAction, Spec

from ms4fleet.health import HealthError, parse_health, script_path


class ActionModule(CoreAction):
    ARGUMENT_SPEC: ClassVar[Spec] = {
        "watch_s": {"type": "float", "default": 0.0},
        "dcgm_level": {"type": "int", "default": 0, "choices": [0, 1, 2, 3]},
        "python": {"type": "str", "default": "python3"},
        "fail_on_unhealthy": {"type": "bool", "default": False},
    }

    def act(self, result: dict[str, Any], args: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        host = variables.get("inventory_hostname", "?")
        command = (
            f"{shlex.quote(args['python'])} - --watch-s {float(args['watch_s'])} --dcgm-level {int(args['dcgm_level'])}"
        )
        done = self._low_level_execute_command(command, sudoable=True, in_data=script_path().read_bytes())
        try:
            report = parse_health(done.get("stdout", ""), host)
        except HealthError as err:
            raise AnsibleActionFail(str(err)) from None
        excluded = [f"GPU {g.index} ({g.summary})" for g in report.excluded]
        result.update(changed=False, health=report.to_json(), usable=list(report.usable))
        if excluded and args["fail_on_unhealthy"]:
            result.update(failed=True, msg=f"{host}: unhealthy: {'; '.join(excluded)}")
        return result
