"""Action ``ms4fleet.fleet.apt_key``: the core's apt key installer, run on the host.

The installer is one standard-library file of the core (``ms4fleet/hostside/apt_key.py``), piped to the host's
python3 over the task's connection (nothing is copied or left on the host): the pyinfra engine's ``apt_key``
operation runs the same file, so both leave the same keyring and refuse the same keys.
"""

from __future__ import annotations

import shlex
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.modules.apt_key import DOCUMENTATION
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.action import CoreAction
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.argspec import from_documentation

from ms4fleet import aptkey
from ms4fleet.hostscripts import source


class ActionModule(CoreAction):
    ARGUMENT_SPEC = from_documentation(DOCUMENTATION)

    def act(self, result: dict[str, Any], args: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        host = variables.get("inventory_hostname", "?")
        argv = ["python3", "-", args["url"], args["keyring"], args["fingerprint"]]
        if self._task.check_mode:
            argv.append("--check")
        done = self._low_level_execute_command(
            " ".join(shlex.quote(a) for a in argv), sudoable=True, in_data=source("apt_key.py")
        )
        answer = aptkey.result(str(done.get("stdout", "")).splitlines())
        result.update(changed=bool(answer["changed"]), fingerprints=answer["fingerprints"])
        if answer["error"] == aptkey.NO_RESULT:
            detail = " ".join(str(done.get("stderr", "")).split())[-300:]
            result.update(failed=True, msg=f"{host}: apt key: {aptkey.NO_RESULT} ({detail})")
        elif answer["error"]:
            result.update(failed=True, msg=f"{host}: apt key: {answer['error']}")
        return result
