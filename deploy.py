"""ms4fleet for pyinfra: ``pyinfra -y INVENTORY deploy.py`` takes every host to verified Mistral Small 4
endpoints on vLLM (provision, weights, units, gates); ``--dry`` plans, ``--limit`` picks groups or hosts.

Every host's ms4fleet_* data is validated by the core before any operation is planned for any host: one
bad host stops the run with one line naming it and the field.
"""

from pyinfra.api.exceptions import PyinfraError

from ms4fleet.config import ConfigError
from ms4fleet_pyinfra.deploys.host import deploy_host
from ms4fleet_pyinfra.hostconfig import host_data, use_sudo, validated
from pyinfra import host, inventory

try:
    configs = validated(inventory)
except ConfigError as err:
    raise PyinfraError(f"ms4fleet: {err}") from None

deploy_host(configs[host.name], use_sudo(host_data(host)), _sudo=use_sudo(host_data(host)))
