"""Action ``ms4fleet.fleet.weights_tree``: the play's hosts with ``weights.peers`` take their pinned revision
through the core's peer tree (``ms4fleet.weights.peers.stage_group``, the plan of ``ms4fleet.weights.tree``),
so the mirror sends it about once. Run once, on the controller, before any host is drained.

Every host pulls from its feeder (the mirror for the first ones), verifies each file against the pinned
manifest before it serves it to the next hosts, and seals the directory; a host that dies or sends bad bytes
is cut out and the hosts it fed are re-attached. Hosts without ``weights.peers`` are left to the
``weights`` action. Check mode changes nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ansible.errors import AnsibleActionFail
from ansible.utils.display import Display
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.action import CoreAction, Spec
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.hostplan import plain_host_data

from ms4fleet.config import HostConfig
from ms4fleet.inventory import connection_of
from ms4fleet.progress import LineView, Tracker
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.peers import Member, check_members, stage_group
from ms4fleet.weights.request import by_files, request_for_host


class ActionModule(CoreAction):
    ARGUMENT_SPEC: ClassVar[Spec] = {"hosts": {"type": "list", "elements": "str", "required": True}}

    def act(self, result: dict[str, Any], args: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        members: list[Member] = []
        try:
            for name in args["hosts"]:
                data = plain_host_data(self._templar, variables["hostvars"][name])
                config = HostConfig.from_host_data(name, data)
                if config.weights is None or not config.weights.peers:
                    continue
                members.append(Member(name, connection_of(data), data, config, request_for_host(config)))
            groups = by_files(members, lambda member: member.request)
            for group in groups:
                check_members(group, None)
        except (ValueError, WeightsError) as err:  # ConfigError is a ValueError
            raise AnsibleActionFail(str(err)) from None
        result.update(changed=False, hosts=[m.name for m in members], lines=[])
        if self._task.check_mode or not members:
            return result
        failed: list[str] = []
        for group in groups:
            progress = Tracker(LineView(Display().display, f"peer staging to {len(group)} host(s)", "host"))
            try:
                report = stage_group(group, None, None, progress=progress)
            except WeightsError as err:
                raise AnsibleActionFail(f"peer staging: {err}") from None
            result["lines"] += report.summary()
            result["changed"] |= any(o.status == "staged" for o in report.outcomes)
            failed += [f"{o.host}: {o.detail}" for o in report.outcomes if o.status == "failed"]
        if failed:
            result.update(failed=True, msg=f"peer staging: {'; '.join(failed)}")
        return result
