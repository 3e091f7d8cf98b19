"""pyinfra's config.py for this checkout: pyinfra runs it before it reads the inventory, so ms4fleet validates
the whole inventory before pyinfra connects to any host (``ms4fleet_pyinfra.preconnect``)."""

from pathlib import Path

from ms4fleet_pyinfra.preconnect import validate_before_connect

validate_before_connect(Path(__file__).with_name("deploy.py"))
