"""Action ``ms4fleet.fleet.converged``: the core's converged check (``ms4fleet.converged.check``) on the host.

The core builds the read-only script (GPU health reading included) and judges its output; this action only
runs the script over the task's connection (``sh -c``, with become) and hands the output back. Nothing is
copied to the host. Any doubt (a config the core rejects, a host whose OS cannot be read) answers "not
converged", never a failure: the roles then run and report the problem themselves.
"""

from __future__ import annotations

import shlex
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.modules.converged import DOCUMENTATION
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import hostplan
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.action import CoreAction
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.argspec import from_documentation

from ms4fleet.converged import check
from ms4fleet.hostoutput import sections
from ms4fleet.serving import plan_host
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.request import request_for_host


class ActionModule(CoreAction):
    ARGUMENT_SPEC = from_documentation(DOCUMENTATION)

    def act(self, result: dict[str, Any], args: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        try:
            # Not self.host_config: a config the core refuses answers "not converged", never a failure.
            config = hostplan.task_host_config(self._templar, variables)
            found = check(
                config.name,
                config,
                lambda excluded: plan_host(config, excluded=excluded),
                request_for_host(config),
                self._read,
                args["quick"],
            )
            plan = plan_host(config, excluded=found.excluded)
        except (ValueError, WeightsError) as err:  # ConfigError is a ValueError
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            result.update(
                changed=False,
                converged=False,
                quick=False,
                differences=[f"not checked: {first}"],
                excluded=[],
                missing_replicas=[],
            )
            return result
        result.update(
            changed=False,
            converged=found.converged,
            quick=found.quick,
            differences=list(found.differences),
            excluded=[e.to_json() for e in found.excluded],
            missing_replicas=[m.explanation for m in plan.missing],
        )
        if found.health_warning:
            result["warnings"] = [found.health_warning]
        return result

    def _read(self, script: str) -> dict[str, list[str]]:
        # As the pyinfra engine's Sections fact: a part that fails prints nothing and the check reads that
        # as a difference; the exit status says nothing more.
        done = self._low_level_execute_command(f"sh -c {shlex.quote(script)} 2>/dev/null", sudoable=True)
        return sections(str(done.get("stdout", "")).splitlines())
