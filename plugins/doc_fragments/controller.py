"""Documentation shared by the collection's actions: the controller needs the ms4fleet core installed."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
requirements:
  - ms4fleet == 0.1.0, the Python package, on the controller (the collection's requirements.txt)
"""
