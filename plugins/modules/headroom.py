#!/usr/bin/python
"""Documentation of the ``ms4fleet.fleet.headroom`` action (the work is done by plugins/action/headroom.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: headroom
short_description: Refuse a host whose GPUs cannot hold its vLLM replicas now
description:
  - Runs on the controller. For each replica of the host's serving plan (from its C(ms4fleet_*) variables),
    sizes the replica against the GPU memory free now in a M(ms4fleet.fleet.probe) report.
  - Memory held by the replica's own unit or container counts as available; memory held by any other
    process does not. A replica that does not fit fails this host only, before anything is changed.
version_added: "0.1.0"
extends_documentation_fragment:
  - ms4fleet.fleet.controller
options:
  probe:
    description: The C(probe) value returned by M(ms4fleet.fleet.probe) on this host.
    type: dict
    required: true
  every_replica:
    description:
      - Count the GPU memory of every ms4fleet replica on the host as available, not only each replica's own
        (a rollout's switch stops them all, also those the new release no longer has).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Check that every replica fits in the memory free now
  ms4fleet.fleet.headroom:
    probe: "{{ gpu_probe.probe }}"
"""

RETURN = r"""
fits:
  description: Whether every replica fits.
  returned: always
  type: bool
replicas:
  description: Per replica, the core's verdict, reasons and per-GPU figures.
  returned: always
  type: list
  elements: dict
"""
