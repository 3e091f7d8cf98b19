"""pyinfra's SSH connections check host keys as the core decides (``ms4fleet.hostkeys``).

pyinfra's own default is ``accept-new`` (trust on first use). ``enforce()`` sets every SSH host's
``ssh_strict_host_key_checking`` when pyinfra makes its connector, just before it connects: ``yes`` unless the
host's data sets ``ms4fleet_ssh_accept_new: true`` (then ``accept-new``), whatever else the inventory or
``--data`` said; the core's validation has already refused an inventory that tries to weaken it. The
checkout's ``config.py`` calls it (pyinfra runs that before it reads the inventory), and so does the rollout
session, which builds its own pyinfra state.

+ ``enforce()``: idempotent, for this process.
"""

from __future__ import annotations

import functools
from typing import Any

from pyinfra.connectors.ssh import SSHConnector

from ms4fleet import hostkeys


def enforce() -> None:
    if getattr(SSHConnector.__init__, "_ms4fleet_hostkeys", False):
        return
    original = SSHConnector.__init__

    @functools.wraps(original)
    def __init__(self: SSHConnector, state: Any, host: Any) -> None:
        original(self, state, host)
        self.data["ssh_strict_host_key_checking"] = hostkeys.checking(host.data.get(hostkeys.ACCEPT_NEW_KEY))

    __init__._ms4fleet_hostkeys = True  # type: ignore[attr-defined]
    SSHConnector.__init__ = __init__  # type: ignore[method-assign,assignment]
