"""Code that runs ON managed hosts, shipped there as single files by the engines.

Modules here use only the Python standard library (3.8+, Ubuntu 20.04 and later) plus optional
packages they import defensively; they never import the rest of ms4fleet.
"""
