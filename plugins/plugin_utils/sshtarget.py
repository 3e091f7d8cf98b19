"""The task's SSH connection as the core's ``HostTarget``, for actions that reach the host outside Ansible's
own transport (rsync for the weights, ``ssh -L`` tunnels for verification).

+ ``ssh_target(action, name, variables)``: host, port, user, key and ssh args of the task's connection and the
  core's host-key checking for it, or ``HostTarget.local(name)`` for ``ansible_connection=local``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import core  # noqa: F401 (before the core)

from ms4fleet import hostkeys
from ms4fleet.weights.stage import HostTarget


def _option(connection: Any, name: str) -> Any:
    try:
        return connection.get_option(name)
    except KeyError:
        return None


def ssh_target(action: Any, name: str, variables: Mapping[str, Any]) -> HostTarget:
    connection = action._connection
    if connection.transport.split(".")[-1] == "local":
        return HostTarget.local(name)
    options: list[str] = []
    for option in ("ssh_common_args", "ssh_extra_args"):
        options += shlex.split(str(_option(connection, option) or ""))
    key = _option(connection, "private_key_file")
    user = _option(connection, "remote_user")
    return HostTarget(
        name=name,
        hostname=str(_option(connection, "host") or action._play_context.remote_addr),
        port=int(_option(connection, "port") or 22),
        user=str(user) if user else None,
        key=os.path.expanduser(str(key)) if key else None,
        ssh_options=tuple(options),
        # The preflight validated the flag and the connection's own StrictHostKeyChecking with the core.
        host_key_checking=hostkeys.checking(action._templar.template(variables.get(hostkeys.ACCEPT_NEW_KEY, False))),
    )
