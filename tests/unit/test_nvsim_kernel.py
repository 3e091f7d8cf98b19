"""The sim's kernel model (``nvsim.kernel``, ``nvsim.modinfo``): the newest kernel in /boot boots and loads its
own NVIDIA module; a kernel without one boots without the driver while another kernel has one; a host
without modelled kernels loads the driver package's module as before."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ms4fleet import kernels
from ms4fleet_sim.nvsim import kernel, modinfo, state

MODULE = {"version": "580.95.05", "flavor": "open", "license": "Dual MIT/GPL"}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(kernel, "BOOT", tmp_path / "boot")
    monkeypatch.setattr(kernel, "MODULES", tmp_path / "modules")
    monkeypatch.setattr(kernel, "BOOTED", tmp_path / "run" / "kernel")
    monkeypatch.setattr(state, "RUN_DIR", tmp_path / "run")
    monkeypatch.setattr(state, "PROCS_DIR", tmp_path / "run" / "procs")
    monkeypatch.setattr(state, "MODULE_LOADED", tmp_path / "run" / "module.json")
    monkeypatch.setattr(state, "MODULE_ON_DISK", tmp_path / "kernel-module.json")
    monkeypatch.setattr(kernel.boot_kernels, "__defaults__", (tmp_path / "boot",))
    monkeypatch.setattr(kernel.module_file, "__defaults__", (tmp_path / "modules",))
    (tmp_path / "run").mkdir()
    return tmp_path


def add_kernel(root: Path, name: str, module: dict[str, str] | None) -> None:
    (root / "boot").mkdir(exist_ok=True)
    (root / "boot" / f"vmlinuz-{name}").write_text("kernel\n")
    (root / "modules" / name).mkdir(parents=True)
    if module is not None:
        path = root / "modules" / name / "updates" / "dkms" / "nvidia.ko"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(module))


def test_the_newest_kernel_boots_with_its_own_module(
    host: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_kernel(host, "6.8.0-45-generic", {**MODULE, "version": "580.82.07"})
    add_kernel(host, "6.8.0-51-generic", MODULE)
    assert kernel.main() == 0
    assert kernel.booted_kernel() == "6.8.0-51-generic"
    assert state.loaded_module() == MODULE
    # The core's choice of the kernel that boots next is the sim's.
    assert kernels.pending_kernel(kernel.boot_kernels()) == kernel.booted_kernel()
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["modinfo", "-F", "filename", "nvidia"])
    assert modinfo.main() == 0
    assert capsys.readouterr().out == f"{host}/modules/6.8.0-51-generic/updates/dkms/nvidia.ko\n"


def test_a_kernel_without_the_module_boots_without_the_driver(host: Path) -> None:
    add_kernel(host, "6.8.0-45-generic", MODULE)
    add_kernel(host, "6.8.0-51-generic", None)
    (host / "kernel-module.json").write_text(json.dumps(MODULE))
    assert kernel.main() == 0
    assert kernel.booted_kernel() == "6.8.0-51-generic"
    assert state.loaded_module() is None


def test_without_modules_in_any_kernel_the_package_module_loads(host: Path) -> None:
    add_kernel(host, "6.8.0-45-generic", None)
    (host / "kernel-module.json").write_text(json.dumps(MODULE))
    assert kernel.main() == 0
    assert state.loaded_module() == MODULE
