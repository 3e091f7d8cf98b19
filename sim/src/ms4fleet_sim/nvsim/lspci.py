"""``lspci`` on a sim host: the real device list plus the profile's NVIDIA GPUs and NVSwitches.

A container cannot get fake PCI devices into sysfs, so the simulated hardware diverts the real
``/usr/bin/lspci`` to ``/usr/bin/lspci.real`` and puts this in its place. Output formats follow pciutils:
``-D`` (domain), ``-n`` (numeric ids), ``-nn`` (names and ids), ``-d [vendor]:[device][:class]``,
``-s [[domain:]bus:]slot[.func]``, ``-k`` (kernel driver once the simulated module is loaded).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from ms4fleet_sim.nvsim import state

REAL_LSPCI = "/usr/bin/lspci.real"
NVIDIA = "10de"
VALUE_OPTIONS = "dsiApHFO"


@dataclass(frozen=True)
class Options:
    domain: bool = False
    numeric: int = 0
    kernel: bool = False
    vendor: str = ""
    device: str = ""
    klass: str = ""
    slot: str = ""


@dataclass(frozen=True)
class Device:
    address: str  # 0000:18:00.0
    class_id: str  # 0302
    class_name: str
    device_id: str  # 2335
    name: str


def parse(argv: list[str]) -> Options:
    opts: dict[str, object] = {}
    numeric = 0
    args = iter(argv)
    for arg in args:
        if not arg.startswith("-") or arg.startswith("--"):
            continue
        letters = arg[1:]
        for position, letter in enumerate(letters):
            if letter in VALUE_OPTIONS:
                value = letters[position + 1 :] or next(args, "")
                if letter == "d":
                    parts = ([*value.split(":"), "", ""])[:3]
                    opts["vendor"], opts["device"], opts["klass"] = (p.lower() for p in parts)
                elif letter == "s":
                    opts["slot"] = value.lower()
                break
            if letter == "D":
                opts["domain"] = True
            elif letter == "n":
                numeric += 1
            elif letter == "k":
                opts["kernel"] = True
    return Options(numeric=numeric, **opts)  # type: ignore[arg-type]


def simulated_devices() -> list[Device]:
    prof = state.profile()
    devices = [
        Device(
            address=gpu["pci_bus_id"][4:].lower(),
            class_id="0302",
            class_name="3D controller",
            device_id=prof["pci_device_id"].removeprefix("0x"),
            name=prof.get("pci_name", "Device"),
        )
        for gpu in prof["gpus"]
    ]
    names: dict[str, str] = prof.get("pci_names", {})
    devices += [
        Device(
            address=switch["pci_bus_id"][4:].lower(),
            class_id="0680",
            class_name="Bridge",
            device_id=switch["pci_device_id"].removeprefix("0x"),
            name=names.get(switch["pci_device_id"], "Device"),
        )
        for switch in prof.get("nvswitches", [])
    ]
    return devices


def _matches(dev: Device, opts: Options) -> bool:
    if opts.vendor and opts.vendor != NVIDIA:
        return False
    if opts.device and opts.device != dev.device_id:
        return False
    if opts.klass and opts.klass != dev.class_id:
        return False
    if opts.slot:
        wanted = opts.slot if opts.slot.count(":") == 2 else "0000:" + opts.slot.rjust(7, "0")
        if not dev.address.startswith(wanted):
            return False
    return True


def render(dev: Device, opts: Options, driver_loaded: bool) -> list[str]:
    address = dev.address if opts.domain else dev.address[5:]
    if opts.numeric == 1:
        line = f"{address} {dev.class_id}: {NVIDIA}:{dev.device_id} (rev a1)"
    elif opts.numeric >= 2:
        line = (
            f"{address} {dev.class_name} [{dev.class_id}]: NVIDIA Corporation {dev.name} "
            f"[{NVIDIA}:{dev.device_id}] (rev a1)"
        )
    else:
        line = f"{address} {dev.class_name}: NVIDIA Corporation {dev.name} (rev a1)"
    lines = [line]
    if opts.kernel:
        if driver_loaded and dev.class_id == "0302":
            lines.append("\tKernel driver in use: nvidia")
        lines.append("\tKernel modules: nvidia" if dev.class_id == "0302" else "")
    return [entry for entry in lines if entry]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts = parse(argv)
    real = subprocess.run([REAL_LSPCI, *argv], capture_output=True, text=True, check=False)
    if real.returncode != 0:
        sys.stderr.write(real.stderr)
        return real.returncode
    # Each real entry starts at a line without leading whitespace; keep entries whole when sorting.
    entries: list[tuple[str, list[str]]] = []
    for line in real.stdout.splitlines():
        if line and not line[0].isspace():
            key = line.split()[0]
            entries.append((key if key.count(":") == 2 else "0000:" + key, [line]))
        elif entries:
            entries[-1][1].append(line)
    loaded = state.loaded_module() is not None
    for dev in simulated_devices():
        if _matches(dev, opts):
            entries.append((dev.address, render(dev, opts, loaded)))
    for _, lines in sorted(entries, key=lambda item: item[0]):
        print("\n".join(lines))
    return 0
