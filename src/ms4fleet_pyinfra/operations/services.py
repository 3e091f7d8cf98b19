"""systemd services: enabled, running, and restarted only when the caller's change test says so.

One operation per service (not pyinfra's ``systemd.service``, whose fact fails the host where systemd is
absent, and whose ``restarted=True`` would also restart a service it has just started).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from pyinfra.api.command import StringCommand
from pyinfra.api.operation import operation
from pyinfra.context import host

from ms4fleet_pyinfra.facts import ServiceStates


@operation()
def service(unit: str, restart: Callable[[], bool] | None = None) -> Generator[Any, None, None]:
    """Enable ``unit``; start it when not running; restart it when running and ``restart()`` is true."""
    active, enabled = host.get_fact(ServiceStates, services=(unit,)).get(unit, ("", ""))
    if enabled != "enabled":
        yield StringCommand("systemctl", "enable", unit)
    if active == "failed":
        # A unit that hit its StartLimitBurst refuses starts until reset: a deploy is a deliberate retry.
        yield StringCommand("systemctl", "reset-failed", unit)
    if active != "active":
        yield StringCommand("systemctl", "start", unit)
    elif restart is not None and restart():
        yield StringCommand("systemctl", "restart", unit)
    elif enabled == "enabled":
        host.noop(f"{unit} active and enabled")
