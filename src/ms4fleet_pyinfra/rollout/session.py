"""One pyinfra ``State`` over a chosen set of inventory hosts, built, run and closed in one call.

+ ``run_state(hosts, build)``: connect to ``hosts`` (inventory order), call ``build(host)`` for each to add
  its operations, run them, disconnect; return which hosts failed and which could not be reached.
+ ``shell(host, script, sudo)``: run one script on a host from inside a ``FunctionCommand``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pyinfra.api.command import StringCommand
from pyinfra.api.config import Config
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.inventory import Inventory
from pyinfra.api.operations import run_ops
from pyinfra.api.state import State

from ms4fleet_pyinfra.hostconfig import use_sudo
from ms4fleet_pyinfra.hostkeys import enforce as enforce_host_keys


class Target(Protocol):
    """An inventory host as pyinfra needs it (``ms4fleet.inventory.HostSpec`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


T = TypeVar("T", bound=Target)


@dataclass
class StateResult:
    failed: set[str] = field(default_factory=set)
    unreachable: set[str] = field(default_factory=set)


def sudo_for(spec: Target) -> bool:
    return use_sudo(spec.data)


def run_state(hosts: Sequence[T], build: Callable[[T], object]) -> StateResult:
    """Run the operations ``build`` adds for each host; a host that fails stops only its own operations."""
    result = StateResult()
    if not hosts:
        return result
    specs = {spec.name: spec for spec in hosts}
    enforce_host_keys()
    # The deploy's own operations (provisioning through the rollout) take sudo from the host data, as under
    # `pyinfra inventory.py deploy.py`; without it they ran as the SSH user and apt was refused.
    data = [(spec.name, {"_sudo": sudo_for(spec), **spec.data}) for spec in hosts]
    inventory = Inventory((data, {}))  # type: ignore[no-untyped-call]
    state = State(inventory, Config(FAIL_PERCENT=None, CONNECT_TIMEOUT=10))  # type: ignore[no-untyped-call]

    def deploy() -> None:
        from pyinfra.context import host

        build(specs[host.name])

    try:
        connect_all(state)
        add_deploy(state, deploy)
        run_ops(state)
    except PyinfraError as err:
        # pyinfra stops the State once no host is left; every host then has failed (recorded below).
        if str(err) != "No hosts remaining!":
            raise
    finally:
        result.unreachable = set(specs) - {host.name for host in state.inventory if host.connected}
        result.failed = {host.name for host in state.failed_hosts} | result.unreachable
        disconnect_all(state)
    return result


def shell(host: Any, script: str, sudo: bool, stdin: str | None = None) -> tuple[bool, str, str]:
    """Run ``sh -c script`` on ``host``; ``(ok, stdout, stderr)``. ``stdin`` carries data, never argv."""
    command = StringCommand("sh", "-c", shlex.quote(script))
    kwargs: dict[str, Any] = {"_sudo": sudo, "print_output": False, "print_input": False}
    if stdin is not None:
        kwargs["_stdin"] = stdin
    ok, output = host.run_shell_command(command, **kwargs)
    return bool(ok), "\n".join(output.stdout_lines), "\n".join(output.stderr_lines)
