"""Boot-time "module load" of the simulated NVIDIA kernel driver (``nvidia-sim-kernel.service``).

A real host loads the driver module that is on disk for the kernel it boots; an upgraded package's module is
not loaded until the next reboot. The simulation keeps that rule in two shapes:

- a host without kernels in /boot (every sim host as created): the driver package installs
  ``/usr/lib/nvidia-sim/kernel-module.json`` (the module on disk) and this unit copies it to
  ``/run/nvidia-sim/module.json`` (the loaded module, gone at reboot because /run is a tmpfs);
- a host whose brownfield profile installed kernels (``/boot/vmlinuz-<kernel>``, ``ms4fleet_sim.brownfield``):
  the kernel that boots is the newest one (GRUB's default entry on Ubuntu and Debian), recorded in
  ``/run/nvidia-sim/kernel``, and the module loaded is its ``/lib/modules/<kernel>/**/nvidia.ko*`` (the sim's
  module files hold the module's JSON). A kernel without one boots without the driver.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ms4fleet_sim.nvsim import state

BOOT = Path("/boot")
MODULES = Path("/lib/modules")
BOOTED = state.RUN_DIR / "kernel"


def boot_kernels(boot: Path = BOOT) -> list[str]:
    if not boot.is_dir():
        return []
    return [p.name[len("vmlinuz-") :] for p in boot.glob("vmlinuz-*") if p.is_file() and not p.is_symlink()]


def default_kernel(kernels: list[str]) -> str | None:
    """The kernel GRUB boots: the newest by version."""
    return max(kernels, key=lambda k: tuple(int(n) for n in re.findall(r"\d+", k)), default=None)


def module_file(kernel: str, modules: Path = MODULES) -> Path | None:
    found = sorted((modules / kernel).rglob("nvidia.ko*")) if (modules / kernel).is_dir() else []
    return found[0] if found else None


def booted_kernel() -> str | None:
    """The kernel this boot runs (None on a host without modelled kernels)."""
    try:
        return BOOTED.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def main() -> int:
    state.PROCS_DIR.mkdir(parents=True, exist_ok=True)
    kernel = default_kernel(boot_kernels())
    if kernel is not None:
        BOOTED.write_text(kernel + "\n", encoding="utf-8")
    path = module_file(kernel) if kernel is not None else None
    if path is not None:
        module = json.loads(path.read_text(encoding="utf-8"))
    elif kernel is not None and any(module_file(k) for k in boot_kernels()):
        print(f"nvidia-sim: kernel {kernel} has no NVIDIA module: the driver is not loaded")
        return 0
    else:
        module = state.installed_module()
    if module is None:
        print("nvidia-sim: no NVIDIA kernel module installed")
        return 0
    state.write_json_atomic(state.MODULE_LOADED, module)
    print(f"nvidia-sim: loaded NVIDIA {module.get('flavor', 'open')} kernel module {module['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
