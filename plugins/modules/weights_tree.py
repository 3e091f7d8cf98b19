#!/usr/bin/python
"""Documentation of the ``ms4fleet.fleet.weights_tree`` action (the work is done by plugins/action/weights_tree.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: weights_tree
short_description: Stage the pinned weights to many hosts through a tree of peers
description:
  - "For the listed hosts whose C(ms4fleet_weights) sets C(peers) to true (mirror source), the ms4fleet core plans
    a tree (C(peer_fanout), C(peer_seeds)): the mirror feeds a few hosts, each host feeds the next ones over
    HTTP on C(peer_address) and C(peer_port) with a token of the run. Every host verifies each file against the
    pinned manifest before it serves it; a host that dies or sends bad bytes is cut out and re-planned around."
  - Run it once (C(run_once)), before any host is drained; the C(weights) action then finds the hosts verified.
version_added: "0.1.0"
extends_documentation_fragment:
  - ms4fleet.fleet.controller
options:
  hosts:
    description: Inventory names of the hosts to stage (usually C(ansible_play_hosts)).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Stage the weights through the peer tree
  ms4fleet.fleet.weights_tree:
    hosts: "{{ ansible_play_hosts }}"
  run_once: true
"""

RETURN = r"""
hosts:
  description: The hosts staged through the tree (those with C(weights.peers)).
  returned: always
  type: list
  elements: str
lines:
  description: One line per host, the tree (seeds, depth, what the source sent) and every host cut out.
  returned: always
  type: list
  elements: str
"""
