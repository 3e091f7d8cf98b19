"""Each host's first converged-check read, sent before the deploy loads.

pyinfra connects to every host, then loads the deploy file (its imports hold the controller for most of a
second), and only then does the deploy run the core's converged check. ``deploy.py`` calls ``send`` before
it imports the deploy (``deploy()`` calls it too, for the packaged deploy): the check's first read runs on
the hosts while the controller loads the deploy, so the hosts' work overlaps the controller's instead of
queueing behind it. The deploy takes that answer only when the command it would run now is the one sent,
byte for byte (same script, same sudo and shell arguments); any other read, and every host where nothing
was sent, goes through the ``Sections`` fact.

Sent only over pyinfra's SSH connector, to a host whose inventory data the core accepts and whose host-key
checking is the core's, and never where sudo or su needs a password (pyinfra's retry may have to ask for it).

+ ``send(state)``: every connected host's first read, sent once per run; returns once each is on its way.
+ ``read(host, script, sudo)``: ``script``'s output on ``host`` by section: the early answer where it is that
  script's, else a read through the ``Sections`` fact.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from paramiko import ChannelFile, SSHException
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
from pyinfra.api.command import StringCommand
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.connectors.ssh import SSHConnector
from pyinfra.connectors.util import make_unix_command, read_output_buffers

from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.converged import first_read_data
from ms4fleet.weights.errors import WeightsError
from ms4fleet_pyinfra.facts import Sections
from ms4fleet_pyinfra.hostconfig import host_data, use_sudo
from ms4fleet_pyinfra.hostkeys import weaker_than_planned
from pyinfra import logger


@dataclass(frozen=True)
class _Sent:
    command: str
    arguments: dict[str, Any]
    stdout: ChannelFile
    stderr: ChannelFile


_RUN_ONLY = ("_get_pty", "_timeout", "_stdin", "_success_exit_codes")


def _command(host: Host, script: str, sudo: bool) -> tuple[str, dict[str, Any]] | None:
    """The raw command and connector arguments the ``Sections`` fact would run now; None where a password may
    be needed."""
    # As pyinfra's fact loader merges them: the current operation's arguments, then the fact call's.
    given = dict(host.current_op_global_arguments or {})
    given["_sudo"] = sudo
    arguments, _ = pop_global_arguments(host.state, host, given)
    connector = {key: value for key, value in arguments.items() if key in CONNECTOR_ARGUMENT_KEYS}
    if (
        connector.get("_sudo_password")
        or connector.get("_su_user")
        or host.connector_data.get("prompted_sudo_password")
    ):
        return None
    # pyinfra's SSH connector keeps these for itself; the rest shape the command line.
    shaping = {key: value for key, value in connector.items() if key not in _RUN_ONLY}
    command = make_unix_command(StringCommand(Sections().command(script)), **shaping)
    return command.get_raw_value(), connector


# What went out to each host, per pyinfra run (a State).
_sent: WeakKeyDictionary[State, dict[str, _Sent]] = WeakKeyDictionary()
_lock = threading.Lock()


def send(state: State) -> None:
    """Send every connected host its first check read, once per run; returns when every read is on its way."""
    # pyinfra loads the deploy file for every host at once, each in its own greenlet: the first sends for all.
    with _lock:
        if state not in _sent:
            _sent[state] = _send_all(state)


def _send_all(state: State) -> dict[str, _Sent]:
    hosts = [host for host in state.inventory.get_active_hosts() if host.connected]
    if not hosts:
        return {}
    # A worker per host (greenlets under pyinfra's command line): opening a channel and starting a command
    # each wait for the host's reply.
    with ThreadPoolExecutor(max_workers=len(hosts)) as workers:
        answers = list(workers.map(lambda host: _send(state, host), hosts))
    return {host.name: one for host, one in zip(hosts, answers, strict=True) if one is not None}


def _send(state: State, host: Host) -> _Sent | None:
    if not isinstance(host.connector, SSHConnector) or host.connector.client is None:
        return None
    if weaker_than_planned(host) is not None:
        return None  # the deploy refuses this host before it reads anything
    data = host_data(host)
    try:
        script = first_read_data(host.name, HostConfig.from_host_data(host.name, data), data)
    except (ConfigError, WeightsError):
        return None  # the deploy names the problem
    built = _command(host, script, use_sudo(data, bool(state.config.SUDO)))
    if built is None:
        return None
    command, arguments = built
    try:
        stdin, stdout, stderr = host.connector.client.exec_command(command, get_pty=bool(arguments.get("_get_pty")))
    except (SSHException, OSError) as err:
        logger.debug(f"{host.print_prefix}early check read not sent: {err}")
        return None
    stdin.close()
    return _Sent(command, arguments, stdout, stderr)


def read(host: Host, script: str, sudo: bool) -> dict[str, list[str]]:
    """``script``'s output on ``host`` by section (the ``Sections`` fact's answer)."""
    sent = _sent.get(host.state, {}).pop(host.name, None)
    if sent is not None:
        built = _command(host, script, sudo)
        if built is not None and built == (sent.command, sent.arguments):
            try:
                output = read_output_buffers(
                    sent.stdout,
                    sent.stderr,
                    timeout=sent.arguments.get("_timeout"),
                    print_output=host.state.print_fact_output,
                    print_prefix=host.print_prefix,
                )
                status = sent.stdout.channel.recv_exit_status()
            except (TimeoutError, SSHException, OSError) as err:
                logger.debug(f"{host.print_prefix}early check read lost ({err}): reading again")
            else:
                if status == 0:
                    logger.debug(f"{host.print_prefix}check answered by the read sent before the deploy loaded")
                    return Sections().process(output.stdout_lines) if output.stdout_lines else Sections.default()
        sent.stdout.channel.close()
    return host.get_fact(Sections, script=script, _sudo=sudo)
