"""Action ``ms4fleet.fleet.headroom``: the core's headroom gate on a probe report, on the controller.

For every replica of the host's serving plan it asks ``ms4fleet.headroom.check_headroom`` whether the
replica would start NOW on its GPUs, counting memory held by that replica's own unit or container as
available (it is freed when the unit restarts) and memory held by anything else as taken. A replica
that does not fit fails THIS host only (Ansible keeps going with the others); nothing was touched yet.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ansible.errors import AnsibleActionFail
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.action import CoreAction, Spec

from ms4fleet.headroom import check_plan
from ms4fleet.probe import ProbeError, ProbeReport
from ms4fleet.serving import plan_host


class ActionModule(CoreAction):
    ARGUMENT_SPEC: ClassVar[Spec] = {
        "probe": {"type": "dict", "required": True},
        # A rollout's switch stops every replica of the host: the memory of all of them counts as available.
        "every_replica": {"type": "bool", "default": False},
    }
    _requires_connection = False

    def act(self, result: dict[str, Any], args: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        config = self.host_config(variables)
        try:
            report = ProbeReport.model_validate(args["probe"])
        except (ValueError, ProbeError) as err:
            raise AnsibleActionFail(str(err).splitlines()[0]) from None
        plan = plan_host(config)
        replicas = [
            {"index": replica.index, "unit": replica.unit_name, **headroom.to_dict()}
            for replica, headroom in check_plan(report, config, plan, args["every_replica"])
        ]
        blocked = [r for r in replicas if r["verdict"] == "does-not-fit"]
        result.update(changed=False, replicas=replicas, fits=not blocked)
        if blocked:
            first = blocked[0]
            why = "; ".join(first["reasons"]) or "no reason given"
            result.update(
                failed=True,
                msg=f"{config.name}: headroom: replica {first['index']} ({first['unit']}) does not fit: {why}",
            )
        return result
