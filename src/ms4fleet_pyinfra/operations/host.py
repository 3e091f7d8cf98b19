"""Host-level operations: apt holds, the service account, and a reboot only when the core says so."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from pyinfra.api import FunctionCommand, StringCommand, operation
from pyinfra.operations import server

from ms4fleet.provision import needs_reboot
from ms4fleet_pyinfra.facts import AptHolds, DriverState, UserExists
from ms4fleet_pyinfra.report import fail
from pyinfra import host


@operation()
def holds(packages: tuple[str, ...]) -> Generator[Any, None, None]:
    """``apt-mark hold`` the packages that are not held yet, so apt never moves them on its own."""
    held = host.get_fact(AptHolds)
    missing = [name for name in packages if name not in held]
    if not missing:
        host.noop(f"held already: {' '.join(packages)}")
        return
    yield StringCommand("apt-mark", "hold", *missing)


@operation()
def service_user(user: str) -> Generator[Any, None, None]:
    """Create the service account (system, no login) when missing; an existing account is left as it is."""
    if host.get_fact(UserExists, user=user):
        host.noop(f"user {user} exists")
        return
    yield StringCommand("useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", user)


@operation(is_idempotent=False)
def reboot_if_needed(driver_changed: Callable[[], bool], policy: str) -> Generator[Any, None, None]:
    """Reboot only when the core's ``needs_reboot`` says the new driver is not the one loaded, then wait."""
    info = host.get_fact(DriverState)
    if not needs_reboot(driver_changed(), info.reboot_required, info.loaded_version, info.version):
        host.noop(f"no reboot needed (driver installed {info.version or '-'}, loaded {info.loaded_version or '-'})")
        return
    if policy == "never":
        yield FunctionCommand(
            fail,
            (
                f"reboot needed (driver {info.version} installed, {info.loaded_version or 'none'} loaded) "
                "but provision.reboot is 'never': reboot the host, then deploy again",
            ),
            {},
        )
        return
    yield from server.reboot._inner(delay=5, interval=2, reboot_timeout=600)


@operation(is_idempotent=False)
def fail_host(message: str) -> Generator[Any, None, None]:
    """Stop this host with ``message``; the other hosts carry on."""
    yield FunctionCommand(fail, (message,), {})
