#!/usr/bin/python
"""Documentation of the ``ms4fleet.fleet.gpu_health`` action (the work is done by plugins/action/gpu_health.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: gpu_health
short_description: Judge every GPU of a host healthy, degraded or unhealthy (NVML, nvidia-smi fallback)
description:
  - Pipes the ms4fleet core's GPU health reader (one standard-library Python file) to the host's python3 and
    returns the core's verdict per GPU with each finding's reason and fix.
  - Reads ECC mode and counters, retired pages, row remapping, PCIe link and replays, NVLink, clocks event
    reasons, temperature, persistence, MIG, fabric state and Xid events (kernel log since boot, NVML events
    while watching). A reading the driver does not support is listed as unsupported, never judged.
  - Read-only; runs in check mode too.
version_added: "0.1.0"
extends_documentation_fragment:
  - ms4fleet.fleet.controller
options:
  watch_s:
    description: Also watch NVML Xid events and PCIe replay growth for this many seconds.
    type: float
    default: 0.0
  dcgm_level:
    description: Run C(dcgmi diag -r N) where DCGM is installed (0 never); a failed run excludes the host's GPUs.
    type: int
    default: 0
    choices: [0, 1, 2, 3]
  python:
    description: Python interpreter on the host (3.8 or later).
    type: str
    default: python3
  fail_on_unhealthy:
    description: Fail the task, naming each excluded GPU and why, when any GPU is unhealthy.
    type: bool
    default: false
  unreadable_ok:
    description:
      - Return C(health=null) and no exclusions instead of failing when no driver answers (a host not
        provisioned yet); the reason is in C(error). Check mode always does so (it installs no driver and
        starts no replica).
    type: bool
    default: false
  planned:
    description:
      - The deploy's gate, a map of replica index to its GPU indices (the serving plan's replicas). The task fails,
        naming each replica and the GPU's reason, when a planned replica would run on a GPU excluded now.
    type: dict
"""

EXAMPLES = r"""
- name: Gate serving on GPU health
  ms4fleet.fleet.gpu_health:
    fail_on_unhealthy: true
  register: gpu_health
"""

RETURN = r"""
health:
  description: The core's report; per GPU its verdict (healthy, degraded, unhealthy), findings and unsupported readings.
  returned: always
  type: dict
usable:
  description: Indices of the GPUs a replica may be placed on (healthy or degraded).
  returned: always
  type: list
  elements: int
excluded:
  description:
    - The core's exclusions for the host's configured GPU count, C([{gpu, reason}]); pass them to the
      C(ms4fleet.fleet.serving_plan) filter to place replicas on the other GPUs.
  returned: always
  type: list
  elements: dict
error:
  description: Why no reading was made (with C(unreadable_ok)); empty otherwise.
  returned: always
  type: str
"""
