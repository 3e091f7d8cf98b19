"""Documentation shared by the collection's actions: who maintains them, the ms4fleet core needed on the
controller, the work done by the action there, and check mode (an action that differs says so)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
author: ms4fleet maintainers
requirements:
  - ms4fleet == 0.1.0, the Python package, on the controller (the collection's requirements.txt)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on
      the controller.
    support: full
"""
