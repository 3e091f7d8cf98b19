"""Action ``ms4fleet.fleet.gpu_health``: read every GPU's health ON the host; the core judges it.

The reader is one standard-library file of the core (``ms4fleet/hostside/health.py``), piped to the host's
python3 over the task's connection (nothing is copied or left on the host); its readings are judged by the
core (``ms4fleet.health.parse_health``): the same rules the pyinfra fact ``GpuHealth`` applies.
Read-only: safe in check mode (where a host no driver answers on yet is not an error: a check run installs
no driver and starts no replica). With ``fail_on_unhealthy`` the task fails naming each excluded GPU; with
``planned`` (replica index -> its GPUs) it is the deploy's gate: it fails with the core's ``gate`` lines when
a planned replica would run on a GPU excluded now. ``excluded`` is the core's ``exclusions`` for the host's
configured GPU count: what the ``serving_plan`` filter places the replicas around.
"""

from __future__ import annotations

import shlex
from typing import Any, ClassVar

from ansible.errors import AnsibleActionFail
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import hostplan
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.action import CoreAction, Spec

from ms4fleet.config import ConfigError
from ms4fleet.health import HealthError, exclusions, gate, parse_health, script_path


class ActionModule(CoreAction):
    ARGUMENT_SPEC: ClassVar[Spec] = {
        "watch_s": {"type": "float", "default": 0.0},
        "dcgm_level": {"type": "int", "default": 0, "choices": [0, 1, 2, 3]},
        "python": {"type": "str", "default": "python3"},
        "fail_on_unhealthy": {"type": "bool", "default": False},
        "unreadable_ok": {"type": "bool", "default": False},
        "planned": {"type": "dict", "default": None},
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
            # A host whose driver is not in yet: planned whole; the gate reads again before replicas start. In
            # check mode nothing is installed and no replica starts, so there is nothing to gate yet either.
            if args["unreadable_ok"] or self._task.check_mode:
                result.update(changed=False, health=None, usable=None, excluded=[], error=str(err))
                return result
            raise AnsibleActionFail(str(err)) from None
        try:
            count = hostplan.task_host_config(self._templar, variables).gpu.count
        except ConfigError:
            count = len(report.gpus)
        unhealthy = [f"GPU {g.index} ({g.summary})" for g in report.excluded]
        result.update(
            changed=False,
            health=report.to_json(),
            usable=list(report.usable),
            excluded=[e.to_json() for e in exclusions(report, count)],
            error="",
        )
        if args["planned"] is not None:
            try:
                planned = {int(k): [int(g) for g in v] for k, v in args["planned"].items()}
            except (TypeError, ValueError):
                raise AnsibleActionFail(f"{host}: planned must map replica index to a list of GPU indices") from None
            blocked = gate(report, count, planned)
            if blocked:
                result.update(failed=True, msg="GPU health gate: " + " | ".join(blocked))
        elif unhealthy and args["fail_on_unhealthy"]:
            result.update(failed=True, msg=f"{host}: unhealthy: {'; '.join(unhealthy)}")
        return result
