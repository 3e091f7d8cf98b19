"""The collection's one controller requirement: the ``ms4fleet`` Python package, at the collection's own
version, in the Python that runs Ansible (``requirements.txt`` at the collection root names it).

+ ``problem()``: None when it is met, else the one line saying what to install, for example
  ``ms4fleet.fleet 0.1.0 needs the ms4fleet Python package 0.1.0 on the controller, and /usr/bin/python3 has
  none: /usr/bin/python3 -m pip install ms4fleet==0.1.0``.
+ ``require()``: raise that line as an ``AnsibleError`` (``plugin_utils/core.py`` calls it on import; every
  plugin imports that module before the core).
+ ``core_filters(module, names)``: a filter plugin's filters. Ansible reports a filter module that fails to
  import as "No filter named ...", so filters import fine and fail when called, with the same line.

The collection's version is read from its ``MANIFEST.json`` once installed, from ``galaxy.yml`` in a checkout.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError, AnsibleFilterError

PACKAGE = "ms4fleet"
COLLECTION = "ms4fleet.fleet"
COLLECTION_ROOT = Path(__file__).resolve().parents[2]


def collection_version(root: Path = COLLECTION_ROOT) -> str:
    manifest = root / "MANIFEST.json"
    if manifest.is_file():
        return str(json.loads(manifest.read_text(encoding="utf-8"))["collection_info"]["version"])
    return str(yaml.safe_load((root / "galaxy.yml").read_text(encoding="utf-8"))["version"])


def installed_version() -> str | None:
    """The ``ms4fleet`` package's version as this Python imports it (None when it cannot)."""
    try:
        module = importlib.import_module(PACKAGE)
    except ImportError:
        return None
    return str(getattr(module, "__version__", "unknown"))


@functools.cache
def problem() -> str | None:
    wanted, found = collection_version(), installed_version()
    if found == wanted:
        return None
    python = sys.executable or "python3"
    return (
        f"{COLLECTION} {wanted} needs the {PACKAGE} Python package {wanted} on the controller, and {python} has "
        f"{found or 'none'}: {python} -m pip install {PACKAGE}=={wanted}"
    )


def require() -> None:
    message = problem()
    if message is not None:
        raise AnsibleError(message)


def _failing(message: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AnsibleFilterError(message)

    return fail


def core_filters(module: str, names: Sequence[str]) -> dict[str, Callable[..., Any]]:
    """``names`` from ``plugin_utils/<module>.py``, each turning the core's one-line errors into filter errors;
    or, without the core, filters that fail with what to install."""
    message = problem()
    if message is not None:
        return {name: _failing(message) for name in names}
    functions = importlib.import_module(f"ansible_collections.ms4fleet.fleet.plugins.plugin_utils.{module}")
    return {name: _guard(getattr(functions, name)) for name in names}


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Core errors (ConfigError, PolicyError, ...: all ValueError) become one-line filter errors naming the
    host and field, instead of a traceback."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as err:
            raise AnsibleFilterError(str(err)) from None

    return wrapped
