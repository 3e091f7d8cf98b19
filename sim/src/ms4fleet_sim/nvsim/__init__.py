"""The simulated NVIDIA side of a sim host: hardware state, ``nvidia-smi``, fabric manager, container toolkit.

Standard library only: these modules run on sim hosts (Debian's python3) and inside containers.
"""
