"""Host-level operations: the pinned apt key, apt holds, the service account, and a reboot only when the core
says so."""

from __future__ import annotations

import contextlib
import logging
import shlex
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from pyinfra.api.command import FunctionCommand, QuoteString, StringCommand
from pyinfra.api.operation import operation
from pyinfra.context import host

from ms4fleet import aptkey
from ms4fleet.hostscripts import python_command
from ms4fleet.kernels import reboot_refusal
from ms4fleet.provision import Pin, move_script, needs_reboot, pinned_moves, released_holds
from ms4fleet_pyinfra.facts import (
    AptHolds,
    AptKeyState,
    BootKernels,
    DriverState,
    FabricManagerState,
    InstalledVersions,
    UserExists,
)
from ms4fleet_pyinfra.report import fail, say

# /run is a tmpfs on every systemd host: a marker there disappears exactly when the host has rebooted.
# (pyinfra's server.reboot compares uptimes, which never reset for containers, such as the sim's hosts.)
REBOOT_MARKER = "/run/ms4fleet/reboot-pending"
REBOOT_TIMEOUT_S = 900.0


@contextlib.contextmanager
def _quiet_paramiko() -> Iterator[None]:
    """paramiko logs a traceback for every refused handshake while sshd is down; expected here."""
    log = logging.getLogger("paramiko.transport")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _wait_for_boot(state: Any, host: Any, timeout_s: float) -> bool:
    """Reconnect until the marker is gone (the host rebooted) and systemd has finished booting."""
    deadline = time.monotonic() + timeout_s
    time.sleep(5)
    host.disconnect()
    with _quiet_paramiko():
        while time.monotonic() < deadline:
            host.connect(show_errors=False)
            if host.connected:
                ok, _ = host.run_shell_command(
                    StringCommand(
                        "test",
                        "!",
                        "-e",
                        REBOOT_MARKER,
                        "&&",
                        "{",
                        "systemctl",
                        "is-system-running",
                        "--wait",
                        "||",
                        "true",
                        ";",
                        "}",
                    ),
                    print_output=False,
                    print_input=False,
                )
                if ok:
                    return True
                host.disconnect()
            time.sleep(2)
    return fail(state, host, f"the host did not come back from its reboot within {timeout_s:.0f} s")


def _install_key(state: Any, host: Any, url: str, keyring: str, fingerprint: str, sudo: bool) -> bool:
    _, output = host.run_shell_command(
        StringCommand("sh", "-c", shlex.quote(python_command("apt_key.py", url, keyring, fingerprint))),
        _sudo=sudo,
        print_output=False,
        print_input=False,
    )
    result = aptkey.result(output.stdout_lines)
    if result["error"]:
        return fail(state, host, f"apt key: {result['error']}")
    say(host, f"apt key {fingerprint} installed as {keyring}")
    return True


@operation()
def apt_key(url: str, keyring: str, fingerprint: str, sudo: bool) -> Generator[Any, None, None]:
    """Install the key published at ``url`` as ``keyring`` only when it holds the pinned ``fingerprint``;
    a key without it fails this host with one line and is never written.

    + url: where the repository publishes its key, e.g. ``https://example.org/repo/key.asc``
    + keyring: the keyring file its sources entry names, e.g. ``/etc/apt/keyrings/example.asc``
    + fingerprint: the pinned primary key (40 hex digits), e.g. ``EB693B3035CD5710E231E123A4B469963BF863CC``
    + sudo: run the installer as root
    """
    found = host.get_fact(AptKeyState, url=url, keyring=keyring, fingerprint=fingerprint)
    if not found["changed"] and not found["error"]:
        host.noop(f"{keyring} holds key {fingerprint}")
        return
    yield FunctionCommand(_install_key, (url, keyring, fingerprint, sudo), {})


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
def release_holds(held_groups: dict[str, tuple[str, ...]]) -> Generator[Any, None, None]:
    """``apt-mark unhold`` what the core says must move before the plan's held groups install (a driver branch
    change: the old branch's held driver conflicts with the new one)."""
    held = host.get_fact(AptHolds)
    stale = released_holds(held_groups, held)
    if not stale:
        host.noop("no hold to release")
        return
    yield StringCommand("apt-mark", "unhold", *stale)


@operation()
def move_to_pins(group_pins: dict[str, tuple[Pin, ...]]) -> Generator[Any, None, None]:
    """Install at the plan's pin what the core's ``pinned_moves`` names: held packages at another version,
    which neither ``apt.packages`` (installed: nothing to do) nor apt itself (held) moves. Their hold stays."""
    names = tuple(sorted({name for pins in group_pins.values() for pin in pins for name in pin.names}))
    installed = host.get_fact(InstalledVersions, packages=names) if names else {}
    moves = pinned_moves(group_pins, installed)
    if not moves:
        host.noop("every pinned package is at its pin")
        return
    # The core's script: refused with one line when the pinned build is in no apt source.
    yield StringCommand("sh", "-c", QuoteString(move_script(group_pins, moves)))


@operation()
def service_user(user: str, shell: str) -> Generator[Any, None, None]:
    """Create the service account (system, the plan's shell) when missing; an existing one is left as it is."""
    if host.get_fact(UserExists, user=user):
        host.noop(f"user {user} exists")
        return
    # The core admits only a plain user name; quoted anyway, as every value that reaches a shell is.
    yield StringCommand(
        "useradd", "--system", "--user-group", "--no-create-home", "--shell", QuoteString(shell), QuoteString(user)
    )


@operation(is_idempotent=False)
def after_change(argv: tuple[str, ...]) -> Generator[Any, None, None]:
    """What the plan runs after a file changed (the initramfs rebuild), where its program is on the host."""
    yield StringCommand("test", "!", "-e", QuoteString(argv[0]), "||", *(QuoteString(a) for a in argv))


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
    # Never into a kernel without the driver: refused in one line, the host keeps running (and serving).
    refusal = reboot_refusal(host.get_fact(BootKernels))
    if refusal is not None:
        yield FunctionCommand(fail, (refusal,), {})
        return
    yield StringCommand("mkdir", "-p", "/run/ms4fleet", "&&", "touch", REBOOT_MARKER)
    # Detached, so the SSH channel closes before the connection dies (pyinfra #1708).
    yield StringCommand("( sleep 1 && systemctl reboot ) </dev/null >/dev/null 2>&1 &")
    yield FunctionCommand(_wait_for_boot, (REBOOT_TIMEOUT_S,), {})


@operation(is_idempotent=False)
def fail_host(message: str) -> Generator[Any, None, None]:
    """Stop this host with ``message``; the other hosts carry on."""
    yield FunctionCommand(fail, (message,), {})


@operation()
def converged(summary: str) -> Generator[Any, None, None]:
    """The whole host already matches the core's plan (one batched check said so): nothing to run."""
    host.noop(summary)
    yield from ()


def _mismatch(state: Any, host: Any, fabric_manager: str, driver: str) -> bool:
    return fail(
        state,
        host,
        f"fabric manager {fabric_manager} does not match driver {driver}: CUDA fails with error 802 on this "
        "NVSwitch host; pin both to provision.driver_version and deploy again",
    )


@operation()
def fabric_manager_matches_driver() -> Generator[Any, None, None]:
    """NVSwitch hosts: the fabric manager must be the driver's exact version (the core pins both; this
    catches a host where something else installed one of them)."""
    info = host.get_fact(DriverState)
    fabric_manager = host.get_fact(FabricManagerState)
    # An adopted driver (no package of ms4fleet's) is the loaded one: the fabric manager is pinned to it.
    driver = info.version or info.loaded_version
    if driver is None or fabric_manager.version is None or driver == fabric_manager.version:
        host.noop(f"fabric manager {fabric_manager.version or '-'} matches driver {driver or '-'}")
        return
    yield FunctionCommand(_mismatch, (fabric_manager.version, driver), {})
