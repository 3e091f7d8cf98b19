#!/usr/bin/python
"""Documentation of the ``ms4fleet.fleet.apt_key`` action (the work is done by plugins/action/apt_key.py).

Its options are written once, here: the action builds its argument spec from this DOCUMENTATION.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: apt_key
short_description: Install an apt repository key only when it is the key pinned by fingerprint
description:
  - Runs the core's key installer (C(ms4fleet/hostside/apt_key.py)) on the host, the same one the pyinfra
    engine runs. If O(keyring) already holds a primary key with O(fingerprint), nothing happens and nothing is
    downloaded. Otherwise the key at O(url) is downloaded and written to O(keyring) (0644, atomically) only
    when one of its primary keys has O(fingerprint); any other key fails the task with one line naming both
    fingerprints, and the keyring is left as it was.
  - Check mode reports whether the key would be installed (it downloads the key to find out) and changes nothing.
  - Run it with C(become).
version_added: "0.1.0"
extends_documentation_fragment:
  - ms4fleet.fleet.controller
options:
  url:
    description: Where the repository publishes its key (C(https://), C(http://) or C(file://) on the host).
    type: str
    required: true
  keyring:
    description: The keyring file the repository's sources entry names (C(Signed-By)).
    type: str
    required: true
  fingerprint:
    description: The pinned primary key, 40 hex digits (spaces and case ignored).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Ensure NVIDIA's repository key, and only that key, is in its keyring
  ms4fleet.fleet.apt_key:
    url: https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/3bf863cc.pub
    keyring: /etc/apt/keyrings/example.asc
    fingerprint: EB693B3035CD5710E231E123A4B469963BF863CC
  become: true
"""

RETURN = r"""
fingerprints:
  description: The primary key fingerprints of the key installed (or found at O(url)).
  returned: always
  type: list
  elements: str
"""
