"""Kernel and driver together: never reboot into a kernel that has no NVIDIA module.

+ ``BOOT_MODULES_SCRIPT``: a shell script run on the host right before a reboot; it prints every kernel with
  an image in /boot and the nvidia.ko* files under its /lib/modules directory (DKMS builds in updates/dkms,
  Ubuntu's prebuilt linux-modules-nvidia-<branch>-open-<kernel> packages, a runfile's kernel/drivers/video).
+ ``parse_boot_modules(lines)``: that output -> kernel -> its module files.
+ ``pending_kernel(kernels)``: the kernel that boots next: the newest by version (the default entry Ubuntu's
  and Debian's GRUB configuration makes).
+ ``reboot_refusal(modules)``: one line naming the pending kernel when it has no module while another kernel
  has one (the driver is this host's own modules), else None.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BOOT_MODULES_SCRIPT = (
    'for f in /boot/vmlinuz-*; do [ -f "$f" ] && [ ! -L "$f" ] || continue; k=${f#/boot/vmlinuz-}; '
    'echo "kernel $k"; find "/lib/modules/$k" -name "nvidia.ko*" 2>/dev/null | sed "s/^/module /"; done'
)


def parse_boot_modules(lines: Iterable[str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in lines:
        kind, _, value = line.strip().partition(" ")
        if kind == "kernel" and value:
            current = value
            out[current] = []
        elif kind == "module" and current is not None and value:
            out[current].append(value)
    return {k: tuple(v) for k, v in out.items()}


def _version_key(kernel: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", kernel))


def pending_kernel(kernels: Iterable[str]) -> str | None:
    return max(kernels, key=_version_key, default=None)


def reboot_refusal(modules: dict[str, tuple[str, ...]]) -> str | None:
    pending = pending_kernel(modules)
    if pending is None or modules[pending] or not any(modules.values()):
        return None
    return (
        f"reboot refused: kernel {pending} (the one that boots next) has no NVIDIA module; the host keeps "
        f"running its current kernel: install linux-modules-nvidia-<branch>-open-{pending} or build the DKMS "
        f"module for it (`dkms autoinstall -k {pending}`, headers linux-headers-{pending}), then deploy again"
    )
