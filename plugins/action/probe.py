"""Action ``ms4fleet.fleet.probe``: run the core's host probe ON the host and return its report.

The probe is one standard-library file of the core (``ms4fleet/hostside/probe.py``); it is piped to the
host's python3 over the task's connection (nothing is copied or left on the host) and its JSON is
validated by the core (``ms4fleet.probe.parse_probe``) before it is returned. Read-only: safe in check mode.
"""

from __future__ import annotations

import shlex
from typing import Any, ClassVar

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.action import CoreAction, Spec

from ms4fleet.probe import ProbeError, parse_probe, probe_script


def run_probe(action: ActionBase, host: str, source: str = "auto", python: str = "python3") -> dict[str, Any]:
    """Pipe the probe to ``python`` on the host; return the validated report as plain data."""
    command = f"{shlex.quote(python)} - --source {shlex.quote(source)}"
    done = action._low_level_execute_command(command, sudoable=True, in_data=probe_script().read_bytes())
    stdout = done.get("stdout", "")
    if not stdout.strip():
        stderr = done.get("stderr", "").strip()[-300:]
        raise AnsibleActionFail(f"{host}: the probe printed nothing (exit {done.get('rc')}): {stderr}")
    try:
        report = parse_probe(stdout, host)
    except ProbeError as err:
        raise AnsibleActionFail(str(err)) from None
    return report.model_dump(mode="json", by_alias=True)


class ActionModule(CoreAction):
    ARGUMENT_SPEC: ClassVar[Spec] = {
        "source": {"type": "str", "default": "auto", "choices": ["auto", "nvml", "nvidia-smi", "pci"]},
        "python": {"type": "str", "default": "python3"},
    }

    def act(self, result: dict[str, Any], args: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        host = variables.get("inventory_hostname", "?")
        report = run_probe(self, host, args["source"], args["python"])
        driver = report["driver"]
        result.update(
            changed=False,
            probe=report,
            source=report["source"],
            gpu_count=len(report["gpus"]),
            # What the running driver reports (NVML/nvidia-smi), else the kernel module's own version.
            driver_loaded=driver["version"] or driver["kernel_module"]["version"],
        )
        return result
