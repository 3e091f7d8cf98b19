"""Import this module before the ``ms4fleet`` core (``from ...plugin_utils import core  # noqa: F401``): on a
controller without the package at the collection's version, the plugin stops with one line saying what to
install (``requirement.problem()``) instead of an import traceback."""

from __future__ import annotations

from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.requirement import require

require()
