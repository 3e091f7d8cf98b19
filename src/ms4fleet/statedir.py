"""Where ms4fleet keeps its state on the controller: ``$MS4FLEET_STATE_DIR``, default
``$XDG_STATE_HOME/ms4fleet``, else ``~/.local/state/ms4fleet`` (rollout journals and locks, the generated
API key)."""

from __future__ import annotations

import os
from pathlib import Path

STATE_ENV = "MS4FLEET_STATE_DIR"


def state_dir() -> Path:
    configured = os.environ.get(STATE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "ms4fleet"
