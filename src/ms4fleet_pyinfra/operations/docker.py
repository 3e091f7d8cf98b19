"""Docker for the vLLM containers: daemon.json merged by the core, and the pinned vLLM image present."""

from __future__ import annotations

import posixpath
from collections.abc import Generator
from io import StringIO
from typing import Any

from pyinfra.api.command import FileUploadCommand, FunctionCommand, QuoteString, StringCommand
from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.operations import files

from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.provision import DAEMON_JSON, DOCKER_APPLY_COMMANDS, daemon_json, daemon_json_apply
from ms4fleet_pyinfra.facts import DockerImage, DockerState
from ms4fleet_pyinfra.report import fail


@operation()
def daemon_config(config: HostConfig) -> Generator[Any, None, None]:
    """Write daemon.json as the core merges it into what the host has (keys ms4fleet does not own stay), and
    have dockerd take it as the core says: reloaded (SIGHUP: running containers untouched) or restarted."""
    info = host.get_fact(DockerState)
    try:
        desired = daemon_json(info.daemon_json, config)
    except ConfigError as err:
        yield FunctionCommand(fail, (str(err),), {})
        return
    if desired == info.daemon_json:
        host.noop(f"{DAEMON_JSON} already has ms4fleet's keys (runtimes: {', '.join(sorted(info.runtimes))})")
        return
    yield from files.put._inner(src=StringIO(desired), dest=DAEMON_JSON, mode="644", user="root", group="root")
    # A Docker this deploy installs runs with its package's defaults until it restarts.
    action = daemon_json_apply(info.daemon_json, desired) if info.installed else "restart"
    if action != "none":
        yield StringCommand(*DOCKER_APPLY_COMMANDS[action])


@operation()
def image(ref: str, archive: str | None = None, image_id: str | None = None) -> Generator[Any, None, None]:
    """The vLLM image as the host plan obtains it: ``docker pull`` when the host has no image ``ref``, or
    ``docker load`` of the controller's archive (air-gapped hosts) when the host's ``ref`` is not ``image_id``."""
    current = host.get_fact(DockerImage, image=ref)
    if current and (archive is None or current == image_id):
        host.noop(f"image {ref} present ({current[:19]})")
        return
    if archive is None:
        yield StringCommand("docker", "pull", QuoteString(ref))
        return
    remote = posixpath.join("/var/tmp", f"ms4fleet-image-{posixpath.basename(archive)}")
    yield FileUploadCommand(archive, remote)
    yield StringCommand("docker", "load", "--input", QuoteString(remote), "&&", "rm", "-f", QuoteString(remote))
