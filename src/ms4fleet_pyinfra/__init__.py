"""The pyinfra engine: facts that read a GPU host cheaply, and operations that apply what the ms4fleet core
decides. ``pyinfra INVENTORY ms4fleet_pyinfra.deploy`` runs the whole deploy (``deploys/fleet.py``; the
repository's ``deploy.py`` is the same as a file)."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # pyinfra resolves `ms4fleet_pyinfra.deploy` as this package's attribute `deploy`; it is loaded only when
    # asked for, so importing a fact or the rollout CLI does not load the whole deploy.
    if name == "deploy":
        from ms4fleet_pyinfra.deploys.fleet import deploy

        return deploy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
