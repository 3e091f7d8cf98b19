#!/usr/bin/python
"""Documentation of the ``ms4fleet.fleet.preflight`` action (the work is done by plugins/action/preflight.py).

Its options are written once, here: the action builds its argument spec from this DOCUMENTATION.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: preflight
short_description: Check the inventory and the controller before any host is touched
description:
  - Runs on the controller. Validates the ms4fleet_* variables of every host in O(validate) together, with
    the ms4fleet core (C(ms4fleet.inventory.validate_hosts)), the same validation as C(ms4fleet plan) and the
    pyinfra engine run. That is each host's configuration, host names, groups of equal precedence that
    disagree, and hosts sharing an address. With O(weights) (a run that serves), also each host's weights
    section and every secret given as a controller environment variable (named when unset, never shown).
  - Runs on the controller. Checks what the run will need there, as the ms4fleet core defines it
    (C(ms4fleet.controller)), the same checks as the pyinfra engine and C(ms4fleet doctor) run. These are the
    programs the run will start (C(rsync) for weights staging, C(ssh) when a host is reached over SSH) with
    their minimum versions, and the Python interpreter, ansible-core and every Python package ms4fleet declares.
  - Fails with one line naming the first bad host and field, or the first missing or unsuitable program or
    package and how to install it.
  - Runs on the controller only and needs no connection to any host. Run it once (C(run_once)) in a first play
    over the run's hosts with C(gather_facts) off, so that it honours C(--limit) and fails before any host
    is touched.
version_added: "0.1.0"
extends_documentation_fragment:
  - ms4fleet.fleet.controller
options:
  hosts:
    description:
      - The inventory hosts the run will reach; C(ssh) is required when any of them is not
        C(ansible_connection=local).
      - Defaults to every host of the inventory.
    type: list
    elements: str
  weights:
    description:
      - Whether the run stages model weights from the controller (needs C(rsync)) and serves the model.
      - With O(validate), every validated host then needs its weights section and its secrets' environment
        variables set on the controller.
    type: bool
    default: false
  validate:
    description:
      - The hosts whose ms4fleet_* variables to validate, all of them together, before any host is touched.
      - Omitted or empty, no host is validated (a run with no GPU hosts, or the controller check alone).
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Controller preflight
  hosts: all
  gather_facts: false
  any_errors_fatal: true
  tasks:
    - name: Check the controller before any host is touched
      ms4fleet.fleet.preflight:
        hosts: "{{ ansible_play_hosts_all }}"
        validate: "{{ ansible_play_hosts_all }}"
        weights: true
      run_once: true
"""

RETURN = r"""
checks:
  description: Every check that ran, with what it wants and what this controller has.
  returned: success
  type: list
  elements: dict
"""
