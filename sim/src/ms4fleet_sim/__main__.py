"""``python -m ms4fleet_sim``: the ``ms4fleet sim`` commands without the core CLI."""

import sys

from ms4fleet_sim.cli import main

sys.exit(main())
