"""Action ``ms4fleet.fleet.weights``: verified model weights on the host, fetched once per fleet.

The core does the work (``ms4fleet.weights``): the controller fetches the host's pinned weights once into
a staging directory (Hub, mirror or path source; resumable, every file hashed), then the host gets them
with the core's fleet staging (``stage_to_hosts``: the stdlib verifier prepares the host directory, rsync
over the task's SSH settings sends only missing or bad files, the host verifies and seals them). Hosts
running this action concurrently share one fetch (the core locks the staging directory).

Idempotent: a host whose directory already verifies for the pinned repo and revision reports ``ok``
without any transfer. Check mode only runs the host-side verifier. Tokens never leave the controller
and are masked in every log record while the fetch runs.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, ClassVar

from ansible.errors import AnsibleActionFail
from ansible.utils.display import Display
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.action import CoreAction, Spec
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.sshtarget import ssh_target

from ms4fleet.hostplan import host_plan
from ms4fleet.progress import LineView, Tracker
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.fetch import fetch_weights
from ms4fleet.weights.request import open_source
from ms4fleet.weights.secret import scrubbed
from ms4fleet.weights.stage import HostTarget, StageJob, stage_to_hosts, verifier_source


def _lines(label: str, unit: str = "file") -> Tracker:
    """A transfer's periodic progress lines in the play's output (a copy of 120 GB takes minutes)."""
    return Tracker(LineView(Display().display, label, unit))


class ActionModule(CoreAction):
    ARGUMENT_SPEC: ClassVar[Spec] = {
        # Unset: the host plan's (the core's staging directory: one copy of the model for both engines).
        "staging_dir": {"type": "path"},
        "endpoint": {"type": "str"},
        "timeout": {"type": "float", "default": 6 * 3600.0},
    }

    def act(self, result: dict[str, Any], args: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        config = self.host_config(variables)
        try:
            planned = host_plan(config, staging_dir=args["staging_dir"]).require_weights()
        except (ValueError, WeightsError) as err:
            raise AnsibleActionFail(str(err)) from None
        request = planned.request
        result.update(dest=request.dest, repo=request.repo_id, revision=request.revision)
        if self._task.check_mode:
            verified = self._verified_on_host(request.dest, request.repo_id, request.revision)
            result.update(changed=not verified, msg="verified" if verified else "would stage the weights")
            return result
        staged = Path(os.path.expanduser(planned.staging_dir)) / request.repo_id.replace("/", "--") / request.revision
        try:
            source, secret = open_source(request, endpoint=args["endpoint"])
            with scrubbed(secret):
                fetched = fetch_weights(
                    source,
                    staged,
                    profile=request.profile,
                    include=request.include,
                    exclude=request.exclude,
                    progress=_lines(f"{config.name}: weights fetch to the controller"),
                )
        except WeightsError as err:
            raise AnsibleActionFail(f"{config.name}: weights: {err}") from None
        job = StageJob(self._target(variables), request.dest, request.owner)
        copy = _lines(f"{config.name}: weights copy", "host")
        outcome = stage_to_hosts(staged, [job], parallel=1, timeout=args["timeout"], progress=copy)[0]
        result.update(
            fetch=fetched.action,
            status=outcome.status,
            bytes_sent=outcome.bytes_sent,
            hashed_on_host=outcome.hashed_on_host,
            steps=outcome.steps,
            changed=outcome.status == "staged",
        )
        if outcome.status == "failed":
            result.update(failed=True, msg=f"{config.name}: weights: {outcome.detail}")
        return result

    def _target(self, task_vars: dict[str, Any]) -> HostTarget:
        """How the core's stager reaches this host: the task's own SSH settings (or this machine)."""
        return ssh_target(self, str(task_vars.get("inventory_hostname", "?")), task_vars)

    def _verified_on_host(self, dest: str, repo: str, revision: str) -> bool:
        command = " ".join(
            shlex.quote(word)
            for word in ("python3", "-", "verify", dest, "--repo", repo, "--revision", revision, "--json")
        )
        done = self._low_level_execute_command(command, sudoable=True, in_data=verifier_source())
        lines = str(done.get("stdout", "")).strip().splitlines()
        try:
            return bool(json.loads(lines[-1])["ok"])
        except (IndexError, ValueError, KeyError):
            return False
