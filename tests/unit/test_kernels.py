"""Kernel and driver together (ms4fleet.kernels): the reboot gate's reading of the host and its one-line
refusal, the script run on a real directory tree, and the unattended-upgrades file both engines write."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ms4fleet.config import HostConfig
from ms4fleet.kernels import BOOT_MODULES_SCRIPT, parse_boot_modules, pending_kernel, reboot_refusal
from ms4fleet.provision import UNATTENDED_FILE, OsRelease, provision_plan


def test_the_pending_kernel_is_the_newest_by_version_not_by_text() -> None:
    assert pending_kernel(["6.8.0-9-generic", "6.8.0-45-generic", "6.8.0-100-generic"]) == "6.8.0-100-generic"
    assert pending_kernel([]) is None


def test_a_pending_kernel_without_the_module_refuses_the_reboot_naming_it() -> None:
    modules = {
        "6.8.0-45-generic": ("/lib/modules/6.8.0-45-generic/updates/dkms/nvidia.ko.zst",),
        "6.8.0-48-generic": (),
    }
    line = reboot_refusal(modules)
    assert line is not None and "\n" not in line
    assert line.startswith("reboot refused: kernel 6.8.0-48-generic (the one that boots next) has no NVIDIA module")
    assert "linux-modules-nvidia-<branch>-open-6.8.0-48-generic" in line and "dkms autoinstall -k 6.8.0-48" in line
    # Built for it: the reboot goes ahead; an older kernel without a module does not matter.
    assert reboot_refusal({**modules, "6.8.0-48-generic": ("kernel/nvidia-580-open/nvidia.ko",)}) is None
    assert reboot_refusal({"6.8.0-40-generic": (), **modules, "6.8.0-48-generic": ("x/nvidia.ko",)}) is None
    # No kernel has a module (the driver comes from outside the host, or none yet): nothing to judge.
    assert reboot_refusal({"6.8.0-45-generic": (), "6.8.0-48-generic": ()}) is None
    assert reboot_refusal({}) is None


def test_the_script_reads_boot_and_modules_as_they_lie(tmp_path: Path) -> None:
    # The script names /boot and /lib/modules: run it with those rewritten to a tree built here.
    boot, mods = tmp_path / "boot", tmp_path / "lib" / "modules"
    boot.mkdir()
    for kver in ("6.8.0-45-generic", "6.8.0-48-generic"):
        (boot / f"vmlinuz-{kver}").write_text("")
    (boot / "vmlinuz").symlink_to("vmlinuz-6.8.0-48-generic")
    (mods / "6.8.0-45-generic" / "updates" / "dkms").mkdir(parents=True)
    (mods / "6.8.0-45-generic" / "updates" / "dkms" / "nvidia.ko.zst").write_text("")
    (mods / "6.8.0-48-generic" / "kernel").mkdir(parents=True)
    script = BOOT_MODULES_SCRIPT.replace("/boot/", f"{boot}/").replace("/lib/modules/", f"{mods}/")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    modules = parse_boot_modules(out.splitlines())
    assert modules == {
        "6.8.0-45-generic": (f"{mods}/6.8.0-45-generic/updates/dkms/nvidia.ko.zst",),
        "6.8.0-48-generic": (),
    }
    assert reboot_refusal(modules) is not None


def test_unattended_upgrades_leave_kernel_and_nvidia_packages_alone() -> None:
    config = HostConfig.from_host_data("gpu-1", {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 8}})
    for os in (OsRelease("ubuntu", "24.04"), OsRelease("debian", "12")):
        [f] = [f for f in provision_plan(config, os).files if f.path == UNATTENDED_FILE]
        assert f.content.startswith("// Managed by ms4fleet")
        assert 'Unattended-Upgrade::Package-Blacklist {\n    "linux-image-";' in f.content
        for pattern in ('"linux-modules-";', '"nvidia-";', '"libnvidia-";'):
            assert pattern in f.content
        assert f.content.endswith("};\n")
