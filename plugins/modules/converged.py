#!/usr/bin/python
"""Documentation of the ``ms4fleet.fleet.converged`` action (the work is done by plugins/action/converged.py).

Its options are written once, here: the action builds its argument spec from this DOCUMENTATION.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: converged
short_description: Ask the ms4fleet core whether a host already is exactly what it plans
description:
  - Runs the core's converged check (C(ms4fleet.converged)), the same one the pyinfra engine runs, in one
    read-only round trip. It compares the host's OS, packages and holds, managed files by sha256,
    C(daemon.json), units active and enabled, no stale unit, the service user, the weights verified, the
    loaded driver, the image present and the last endpoint verification on record.
  - Once a full check has passed, the controller keeps its verdict (the digest of what the core wanted and
    the host's fingerprint); while both still match, a quick check (fingerprint, unit states, image) gives
    the same answer without hashing files or reading the package database.
  - Returns C(converged=true) only when the check ran and found no difference; a host it cannot judge is
    reported not converged, so the full roles run. Never changes the host.
  - Run it with C(become) (secret files and the service environment file are root's).
version_added: "0.1.0"
extends_documentation_fragment:
  - ms4fleet.fleet.controller
options:
  quick:
    description: Use the controller's stored verdict (the quick check) when it still applies.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Ask the core whether this host already is what it plans
  ms4fleet.fleet.converged:
  register: fleet_converged
"""

RETURN = r"""
converged:
  description: Whether the host is exactly what the core plans.
  returned: always
  type: bool
differences:
  description: What differs (the first reasons the full roles must run); empty when converged.
  returned: always
  type: list
  elements: str
quick:
  description: Whether a stored verdict was confirmed instead of running the full check.
  returned: always
  type: bool
excluded:
  description: GPUs the core's health check excludes now (C([{gpu, reason}])); the plan checked leaves them out.
  returned: always
  type: list
  elements: dict
missing_replicas:
  description: Each replica the plan leaves out because of an excluded GPU, with why.
  returned: always
  type: list
  elements: str
"""
