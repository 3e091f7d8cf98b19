"""Each host's first converged-check read, sent before the deploy loads.

pyinfra connects to every host, then loads the deploy file (its imports hold the controller for most of a
second), and only then does the deploy run the core's converged check. ``deploy.py`` calls ``send`` before
it imports the deploy (``deploy()`` calls it too, for the packaged deploy): each host gets the request for
a session channel at once, and ``send`` returns without waiting for the answers. A host sets up an SSH
session (sshd's PAM session, a logind session) before it confirms the channel, so that set-up now runs while
the controller loads the deploy instead of holding it; the command itself goes out when the channel is
confirmed. The deploy takes that answer only when the command it would run now is the one sent, byte for
byte (same script, same sudo and shell arguments); any other read, and every host where nothing was sent,
goes through the ``Sections`` fact.

Sent only over pyinfra's SSH connector, to a host whose inventory data the core accepts and whose host-key
checking is the core's, and never where sudo or su needs a password (pyinfra's retry may have to ask for it).

+ ``send(state)``: every connected host's first read, sent once per run; returns once each host has been
  asked for its channel.
+ ``read(host, script, sudo)``: ``script``'s output on ``host`` by section: the early answer where it is that
  script's, else a read through the ``Sections`` fact.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from paramiko import ChannelFile, SSHClient, SSHException
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
    # The command's (stdout, stderr) once the host confirmed the channel and took the command; None if not.
    streams: Future[tuple[ChannelFile, ChannelFile] | None]


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
    """Send every connected host its first check read, once per run; returns once every host was asked for its
    channel, without waiting for its answer."""
    # pyinfra loads the deploy file for every host at once, each in its own greenlet: the first sends for all.
    with _lock:
        if state not in _sent:
            _sent[state] = _send_all(state)


def _send_all(state: State) -> dict[str, _Sent]:
    hosts = [host for host in state.inventory.get_active_hosts() if host.connected]
    planned = [
        (host, client, built) for host in hosts if (client := _client(host)) and (built := _planned(state, host))
    ]
    if not planned:
        return {}
    # A sender per host (a greenlet under pyinfra's command line): opening a channel and starting a command
    # each wait for the host's reply.
    senders = ThreadPoolExecutor(max_workers=len(planned))
    sent = {
        host.name: _Sent(command, arguments, senders.submit(_exec, host, client, command, arguments))
        for host, client, (command, arguments) in planned
    }
    senders.shutdown(wait=False)
    # One yield: under gevent each sender runs until it waits for its host's reply, its request on the wire.
    time.sleep(0)
    return sent


def _client(host: Host) -> SSHClient | None:
    """The host's SSH client where pyinfra reached it over its SSH connector."""
    return host.connector.client if isinstance(host.connector, SSHConnector) else None


def _planned(state: State, host: Host) -> tuple[str, dict[str, Any]] | None:
    """The command and connector arguments of ``host``'s first check read; None where none may be sent."""
    if weaker_than_planned(host) is not None:
        return None  # the deploy refuses this host before it reads anything
    data = host_data(host)
    try:
        script = first_read_data(host.name, HostConfig.from_host_data(host.name, data), data)
    except (ConfigError, WeightsError):
        return None  # the deploy names the problem
    return _command(host, script, use_sudo(data, bool(state.config.SUDO)))


def _exec(
    host: Host, client: SSHClient, command: str, arguments: dict[str, Any]
) -> tuple[ChannelFile, ChannelFile] | None:
    try:
        stdin, stdout, stderr = client.exec_command(command, get_pty=bool(arguments.get("_get_pty")))
    except (SSHException, OSError) as err:
        logger.debug(f"{host.print_prefix}early check read not sent: {err}")
        return None
    stdin.close()
    return stdout, stderr


def read(host: Host, script: str, sudo: bool) -> dict[str, list[str]]:
    """``script``'s output on ``host`` by section (the ``Sections`` fact's answer)."""
    sent = _sent.get(host.state, {}).pop(host.name, None)
    streams = sent.streams.result() if sent is not None else None
    if sent is not None and streams is not None:
        stdout, stderr = streams
        if _command(host, script, sudo) == (sent.command, sent.arguments):
            try:
                output = read_output_buffers(
                    stdout,
                    stderr,
                    timeout=sent.arguments.get("_timeout"),
                    print_output=host.state.print_fact_output,
                    print_prefix=host.print_prefix,
                )
                status = stdout.channel.recv_exit_status()
            except (TimeoutError, SSHException, OSError) as err:
                logger.debug(f"{host.print_prefix}early check read lost ({err}): reading again")
            else:
                if status == 0:
                    logger.debug(f"{host.print_prefix}check answered by the read sent before the deploy loaded")
                    return Sections().process(output.stdout_lines) if output.stdout_lines else Sections.default()
        stdout.channel.close()
    return host.get_fact(Sections, script=script, _sudo=sudo)
