"""The packaged pyinfra deploy: ``pyinfra -y INVENTORY ms4fleet_pyinfra.deploy`` (the root ``deploy.py`` calls
the same function) takes every host to verified Mistral Small 4 endpoints on vLLM; ``--dry`` plans.

Every host's ms4fleet_* data is validated by the core before any operation is planned for any host: one bad
host stops the run with one line naming it and the field; so does a host pyinfra reached with weaker SSH
host-key checking than the core's (``ms4fleet_pyinfra.hostkeys``). Privilege follows pyinfra's own settings (``--sudo``,
``--sudo-user``, the host's ``_sudo`` data); without them, an SSH user other than root uses sudo.

Hosts that serve and whose change would stop their replicas are changed first, in the core's batches, drained
from the load balancer (``ms4fleet_pyinfra.deploys.batched``); a first install goes wide.
"""

from __future__ import annotations

from pyinfra.api.exceptions import PyinfraError
from pyinfra.context import config, host, inventory, state

from ms4fleet.config import ConfigError
from ms4fleet_pyinfra import earlyread
from ms4fleet_pyinfra.deploys.batched import switch_serving_hosts
from ms4fleet_pyinfra.deploys.host import deploy_host
from ms4fleet_pyinfra.hostconfig import host_data, use_sudo, validated
from ms4fleet_pyinfra.hostkeys import weaker_than_planned


def deploy() -> None:
    """Deploy the current host (pyinfra calls this once per inventory host)."""
    earlyread.send(state)  # once per run (deploy.py sent already, before its imports)
    try:
        configs = validated(inventory)
    except ConfigError as err:
        raise PyinfraError(f"ms4fleet: {err}") from None
    weaker = weaker_than_planned(host)
    if weaker is not None:
        raise PyinfraError(f"ms4fleet: {weaker}")
    switch_serving_hosts(inventory)
    sudo = use_sudo(host_data(host), bool(config.SUDO))
    deploy_host(config=configs[host.name], sudo=sudo, _sudo=sudo)
