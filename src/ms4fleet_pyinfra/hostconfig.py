"""The core's validated configuration for pyinfra hosts: every host, and the controller, is checked before
any host is touched.

+ ``validate_inventory(inventory)``: ``{host name: HostConfig}`` for all hosts, or ``ConfigError`` naming the
  first bad host and field.
+ ``validated(inventory)``: the same, computed once per inventory (deploy.py runs once per host: the others wait
  for the first), after the core's controller preflight (programs, versions, Python packages) for this
  inventory's deploy; a failing check stops the run as one ``PyinfraError`` line (``ms4fleet: controller: ...``).
+ ``use_sudo(host_data, config_sudo)``: whether commands need sudo: pyinfra's own order (the host's ``_sudo``, then
  ``--sudo``), and when neither asks for it, any SSH user but root.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pyinfra.api.exceptions import PyinfraError

from ms4fleet.config import HostConfig
from ms4fleet.controller import ControllerError, deploy_uses, require_controller
from ms4fleet.inventory import validate_hosts
from ms4fleet.weights.stage import is_local
from ms4fleet_pyinfra.inventory import raw_hosts


def host_data(host: Any) -> dict[str, Any]:
    return dict(host.data.dict())


def validate_inventory(inventory: Iterable[Any]) -> dict[str, HostConfig]:
    """The core's validator over every inventory host (``ms4fleet.inventory.validate_hosts``): each host's
    config, the fleet-wide rules, the weights section and the secrets a deploy reads from this environment."""
    return {spec.name: spec.config for spec in validate_hosts(raw_hosts(inventory), deploying=True)}


_validated: dict[int, dict[str, HostConfig]] = {}
# deploy.py runs once per host, each in its own greenlet, and the preflight runs programs (a switch to another
# greenlet): without the lock every host would validate the inventory and check the controller again.
_lock = threading.Lock()


def preflight(hosts: Iterable[Any]) -> None:
    """The controller checks a deploy of ``hosts`` needs (it always stages weights from the controller)."""
    remote = any(not is_local(host.name, host_data(host)) for host in hosts)
    try:
        require_controller(deploy_uses("pyinfra", weights=True, remote=remote), ["pyinfra"])
    except ControllerError as err:
        raise PyinfraError(f"ms4fleet: {err}") from None


def validated(inventory: Any) -> dict[str, HostConfig]:
    with _lock:
        key = id(inventory)
        if key not in _validated:
            _validated.clear()
            configs = validate_inventory(inventory)
            preflight(inventory)
            _validated[key] = configs
        return _validated[key]


def use_sudo(data: Mapping[str, Any], config_sudo: bool = False) -> bool:
    if "_sudo" in data:
        return bool(data["_sudo"])
    if config_sudo:
        return True
    user = data.get("ssh_user")
    return user is not None and user != "root"
