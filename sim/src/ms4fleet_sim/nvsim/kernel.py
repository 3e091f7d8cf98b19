"""Boot-time "module load" of the simulated NVIDIA kernel driver (``nvidia-sim-kernel.service``).

A real host loads the driver module that is on disk when it boots; an upgraded package's module is not
loaded until the next reboot. The simulation keeps that rule: the driver package installs
``/usr/lib/nvidia-sim/kernel-module.json`` (the module on disk) and this unit copies it to
``/run/nvidia-sim/module.json`` (the loaded module, gone at reboot because /run is a tmpfs).
"""

from __future__ import annotations

import sys

from ms4fleet_sim.nvsim import state


def main() -> int:
    state.PROCS_DIR.mkdir(parents=True, exist_ok=True)
    module = state.installed_module()
    if module is None:
        print("nvidia-sim: no NVIDIA kernel module installed")
        return 0
    state.write_json_atomic(state.MODULE_LOADED, module)
    print(f"nvidia-sim: loaded NVIDIA {module.get('flavor', 'open')} kernel module {module['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
