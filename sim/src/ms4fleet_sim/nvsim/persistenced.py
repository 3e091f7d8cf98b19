"""``nvidia-persistenced`` of the simulated driver: runs only while a driver module is loaded; with
``--persistence-mode`` it turns every GPU's persistence mode on (what ``nvidia-smi -pm 1`` sets), with
``--no-persistence-mode`` (the packaged unit's default) it leaves it as it is, as the real daemon does."""

from __future__ import annotations

import sys
from pathlib import Path

from ms4fleet_sim.nvsim import state
from ms4fleet_sim.nvsim.daemon import daemonize
from ms4fleet_sim.nvsim.smi import PERSISTENCE

PID_FILE = Path("/var/run/nvidia-persistenced/nvidia-persistenced.pid")


def main() -> int:
    if state.loaded_module() is None:
        sys.stderr.write("nvidia-persistenced failed to initialize. Check syslog for more details.\n")
        sys.stderr.write(
            "Failed to query NVIDIA devices. Please ensure that the NVIDIA device files (/dev/nvidia*) exist\n"
        )
        return 1
    if "--persistence-mode" in sys.argv[1:] and "--no-persistence-mode" not in sys.argv[1:]:
        state.write_json_atomic(PERSISTENCE, {"enabled": True})
    sys.stderr.write("Started (ms4fleet sim)\n")
    daemonize(PID_FILE)
    return 0
