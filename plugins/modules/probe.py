#!/usr/bin/python
"""Documentation of the ``ms4fleet.fleet.probe`` action (the work is done by plugins/action/probe.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: probe
short_description: Probe a GPU host (GPUs, memory, driver, fabric manager, GPU processes)
description:
  - Pipes the ms4fleet core's host probe (one standard-library Python file) to the host's python3 over the
    task's connection and returns its JSON report, validated by the core.
  - Sources are tried in order NVML, nvidia-smi, PCI unless O(source) forces one.
  - Read-only; runs in check mode too.
version_added: "0.1.0"
extends_documentation_fragment:
  - ms4fleet.fleet.controller
options:
  source:
    description: Force one probe source instead of trying them in order.
    type: str
    default: auto
    choices: [auto, nvml, nvidia-smi, pci]
  python:
    description: Python interpreter on the host (3.8 or later).
    type: str
    default: python3
"""

EXAMPLES = r"""
- name: Probe the GPUs
  ms4fleet.fleet.probe:
  register: gpu_probe
"""

RETURN = r"""
probe:
  description: The probe report (schema 1, see docs/probe.md).
  returned: always
  type: dict
source:
  description: Which source answered (nvml, nvidia-smi, pci, none).
  returned: always
  type: str
gpu_count:
  description: Number of GPUs seen.
  returned: always
  type: int
driver_loaded:
  description: Version of the driver running now, or null when none is loaded.
  returned: always
  type: str
"""
