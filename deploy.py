"""ms4fleet for pyinfra from a checkout: ``pyinfra -y INVENTORY deploy.py`` is
``pyinfra -y INVENTORY ms4fleet_pyinfra.deploy`` (``ms4fleet_pyinfra/deploys/fleet.py``), as a file."""

from pyinfra.context import state

from ms4fleet_pyinfra import earlyread

# Every host's first check read goes out before the deploy's imports, which it then overlaps.
earlyread.send(state)

from ms4fleet_pyinfra.deploys.fleet import deploy  # noqa: E402 - after the reads went out

deploy()
