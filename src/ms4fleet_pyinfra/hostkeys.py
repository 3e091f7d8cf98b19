"""pyinfra's SSH connections check host keys as the core decides (``ms4fleet.hostkeys``).

pyinfra's own default is ``accept-new`` (trust on first use). ``enforce()`` sets every SSH host's
``ssh_strict_host_key_checking`` when pyinfra makes its connector, just before it connects: ``yes`` unless the
host's data sets ``ms4fleet_ssh_accept_new: true`` (then ``accept-new``), whatever else the inventory or
``--data`` said; the core's validation has already refused an inventory that tries to weaken it. The
checkout's ``config.py`` calls it (pyinfra runs that before it reads the inventory), and so does the rollout
session, which builds its own pyinfra state.

Run without the checkout (``pyinfra INVENTORY ms4fleet_pyinfra.deploy`` from elsewhere) nothing ran before
pyinfra connected: the deploy then refuses each host that was reached with weaker checking than the core's
(``weaker_than_planned``), before any operation, and says how to run it.

+ ``enforce()``: idempotent, for this process.
+ ``weaker_than_planned(host)``: one line for a host pyinfra reached with weaker checking, else None.
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


def weaker_than_planned(host: Any) -> str | None:
    if not isinstance(host.connector, SSHConnector):
        return None
    used = host.connector.data.get("ssh_strict_host_key_checking")
    wanted = hostkeys.checking(host.data.get(hostkeys.ACCEPT_NEW_KEY))
    if used in (hostkeys.STRICT, wanted):
        return None
    return (
        f"{host.name}: ssh_strict_host_key_checking was {used!r} when pyinfra connected (its own default is "
        f"trust on first use), not ms4fleet's {wanted!r}: run pyinfra from ms4fleet's checkout (its config.py) "
        "or with --data ssh_strict_host_key_checking=yes, and check the key known_hosts gained for this host"
    )
