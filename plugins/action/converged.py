"""Action ``ms4fleet.fleet.converged``: the core's converged check (``ms4fleet.converged.check``) on the host.

The core builds the read-only script and judges its output; this action only runs the script over the
task's connection (``sh -c``, with become) and hands the output back. Nothing is copied to the host. Any
doubt (a config the core rejects, a host whose OS cannot be read) answers "not converged", never a failure:
the roles then run and report the problem themselves.
"""

from __future__ import annotations

import shlex
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.modules.converged import DOCUMENTATION
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import hostplan
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.action import CoreAction
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.argspec import from_documentation

from ms4fleet.converged import check
from ms4fleet.health import HealthError, exclusions, parse_health, script_path
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
            excluded = self._excluded(config.name, config.gpu.count)
            plan = plan_host(config, excluded=excluded)
            found = check(config.name, config, plan, request_for_host(config), self._read, args["quick"])
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
            excluded=[e.to_json() for e in excluded],
            missing_replicas=[m.explanation for m in plan.missing],
        )
        return result

    def _excluded(self, host: str, gpu_count: int) -> Any:
        """The core's GPU exclusions now, as the pyinfra deploy reads them before its own check: a GPU that
        went bad since the last run makes the host unconverged (its replica must go). None without a driver."""
        done = self._low_level_execute_command("python3 -", sudoable=True, in_data=script_path().read_bytes())
        try:
            return exclusions(parse_health(str(done.get("stdout", "")), host), gpu_count)
        except HealthError:
            return ()

    def _read(self, script: str) -> dict[str, list[str]]:
        # As the pyinfra engine's Sections fact: a part that fails prints nothing and the check reads that
        # as a difference; the exit status says nothing more.
        done = self._low_level_execute_command(f"sh -c {shlex.quote(script)} 2>/dev/null", sudoable=True)
        return sections(str(done.get("stdout", "")).splitlines())
