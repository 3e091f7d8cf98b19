"""``nv-fabricmanager`` of the simulated fabric manager package.

Like the real one it refuses to run unless its version equals the LOADED driver module's version, and it
has nothing to manage (and exits with an error) on hosts without NVSwitches. On NVLink5 (Blackwell)
boards it also needs the NVLink subnet manager (``nvlsm``) installed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ms4fleet_sim.nvsim import state
from ms4fleet_sim.nvsim.daemon import daemonize

INFO = Path("/usr/lib/nvidia-sim/fabricmanager.json")
LOG = Path("/var/log/fabricmanager.log")
PID_FILE = Path("/var/run/nvidia-fabricmanager/nv-fabricmanager.pid")


def check() -> str | None:
    """Why the fabric manager cannot start, or None."""
    version = json.loads(INFO.read_text(encoding="utf-8"))["version"]
    module = state.loaded_module()
    if module is None:
        return "fabric manager failed to open NVIDIA GPU driver interface: the NVIDIA driver is not loaded"
    if module["version"] != version:
        return (
            f"fabric manager NVIDIA GPU driver interface version {version} don't match with driver version "
            f"{module['version']}. Please update with matching NVIDIA driver package."
        )
    prof = state.profile()
    if not prof.get("nvswitch"):
        return (
            "request to query NVSwitch device information from NVSwitch driver failed with "
            "error:WARNING Nothing to do [NV_WARN_NOTHING_TO_DO]"
        )
    if prof.get("nvlink5") and shutil.which("nvlsm") is None:
        return "NVLink Subnet Manager (nvlsm) is not installed; it is required on NVLink5 systems"
    return None


def main() -> int:
    problem = check()
    with LOG.open("a", encoding="utf-8") as log:
        log.write(
            (problem or "Successfully configured all the available NVSwitches to route GPU NVLink traffic.") + "\n"
        )
    if problem is not None:
        sys.stderr.write(problem + "\n")
        return 1
    print("Successfully configured all the available NVSwitches to route GPU NVLink traffic.", flush=True)
    daemonize(PID_FILE)
    return 0
