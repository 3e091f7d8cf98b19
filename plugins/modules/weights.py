#!/usr/bin/python
"""Documentation of the ``ms4fleet.fleet.weights`` action (the work is done by plugins/action/weights.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: weights
short_description: Put the host's pinned, verified model weights in place
description:
  - Fetches the weights named by the host's C(ms4fleet_weights) (Hub, mirror or path; pinned revision) once
    on the controller, then stages them to the host over SSH with rsync; the host verifies every file
    (size and sha256) and seals the directory read-only for the service user.
  - A host whose directory already verifies is left alone. Check mode only verifies on the host.
version_added: "0.1.0"
extends_documentation_fragment:
  - ms4fleet.fleet.controller
options:
  staging_dir:
    description:
      - Controller directory holding one verified copy per repo and revision.
      - Unset, the ms4fleet core's staging directory (the same one C(ms4fleet weights stage) and the pyinfra
        engine use, so using both engines stores the model once).
    type: path
  endpoint:
    description: Hugging Face Hub endpoint (default, the public Hub or C(HF_ENDPOINT)).
    type: str
  timeout:
    description: Seconds allowed for the transfer to one host.
    type: float
    default: 21600.0
"""

EXAMPLES = r"""
- name: Stage the weights
  ms4fleet.fleet.weights:
"""

RETURN = r"""
dest:
  description: The weights directory on the host.
  returned: always
  type: str
status:
  description: present (already verified) or staged.
  returned: success
  type: str
bytes_sent:
  description: Bytes rsync sent to this host.
  returned: success
  type: int
"""
