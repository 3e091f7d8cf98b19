#!/usr/bin/python
"""Documentation of the ``ms4fleet.fleet.verify`` action (the work is done by plugins/action/verify.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: verify
short_description: Prove every vLLM replica of a host really serves
description:
  - Runs the ms4fleet core's endpoint checks (health, models, a completion that decodes, a forced tool call,
    reasoning, streaming, metrics; auth when selected) against every replica of the host's serving plan.
  - C(auth) asks every route of vLLM's app but /v1/* and /health without the API key (each must answer 401
    or 404) and a chat completion without it (401); skipped for a host whose C(serving.open_endpoint) is true.
  - Replicas listen on the host's loopback; the checks reach them through an SSH tunnel over the task's own
    connection settings (a unix socket on the controller), so hosts need nothing but sshd.
  - On failure the replica's journal is read to name the cause. Skipped in check mode.
version_added: "0.1.0"
extends_documentation_fragment:
  - ms4fleet.fleet.controller
options:
  checks:
    description: Checks to run; default, the checks the model's catalog profile can pass (image and auth excluded).
    type: list
    elements: str
    choices: [health, models, auth, completion, tools, reasoning, streaming, sdk, image, metrics]
  skip:
    description: Checks to leave out.
    type: list
    elements: str
    default: []
    choices: [health, models, auth, completion, tools, reasoning, streaming, sdk, image, metrics]
  timeout:
    description: Seconds allowed per request (default the host plan's verification gate, C(gates.verify.timeout_s)).
    type: float
  tunnel_timeout:
    description: Seconds allowed for the SSH tunnel to open.
    type: float
    default: 30.0
  ports:
    description:
      - vLLM ports on the host to check instead of the plan's replicas (a rollback checks the previous
        release's, C(ms4fleet.fleet.rollout_replicas)); nothing is recorded for the converged check then.
    type: list
    elements: int
attributes:
  check_mode:
    support: none
"""

EXAMPLES = r"""
- name: Verify the endpoints
  ms4fleet.fleet.verify:
    skip: [metrics]
"""

RETURN = r"""
ok:
  description: Whether every replica passed every selected check.
  returned: success
  type: bool
replicas:
  description: Per replica, the core's verification report (checks with latency, named causes).
  returned: success
  type: list
  elements: dict
"""
