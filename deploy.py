"""ms4fleet for pyinfra from a checkout: ``pyinfra -y INVENTORY deploy.py`` is
``pyinfra -y INVENTORY ms4fleet_pyinfra.deploy`` (``ms4fleet_pyinfra/deploys/fleet.py``), as a file."""

from ms4fleet_pyinfra.deploys.fleet import deploy

deploy()
