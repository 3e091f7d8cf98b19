"""Every fact class the pyinfra engine defines works from pyinfra's own CLI
(``pyinfra @local fact ms4fleet_pyinfra.facts.NAME ARG=VALUE``), which JSON-encodes each fact's value: the
classes are discovered from the package, so a new fact is checked without being listed here."""

from __future__ import annotations

import inspect
import json
import pkgutil
import subprocess
import sys
from importlib import import_module
from pathlib import Path

from pyinfra.api.facts import FactBase

import ms4fleet_pyinfra

PYINFRA = Path(sys.executable).with_name("pyinfra")
# A value for each argument name a fact's ``command`` takes, as pyinfra's CLI parses it (JSON where not a
# plain string). Read-only on this machine, like every fact.
SAMPLES = {
    "image": "ms4fleet-absent/image:none",
    "path": "/etc/hostname",
    "user": "root",
    "services": '["cron", "ssh"]',
    "packages": '["dpkg", "ms4fleet-absent-package"]',
    "script": "echo '--ms4fleet-- os'; cat /etc/os-release",
    "repo": "mistralai/Mistral-Small-4-119B-2603",
    "revision": "5e" * 20,
    "watch_s": "0",
    "dcgm_level": "0",
    "url": "file:///nonexistent/key.asc",
    "keyring": "/nonexistent/keyring.asc",
    "fingerprint": "EB693B3035CD5710E231E123A4B469963BF863CC",
}


def fact_classes() -> list[type[FactBase[object]]]:
    """Every FactBase subclass defined in a module of the ``ms4fleet_pyinfra`` package."""
    found = []
    for module_info in pkgutil.walk_packages(ms4fleet_pyinfra.__path__, "ms4fleet_pyinfra."):
        module = import_module(module_info.name)
        found += [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, FactBase) and cls is not FactBase and cls.__module__ == module.__name__
        ]
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__name__}")


def test_every_fact_class_prints_json_through_the_pyinfra_cli(tmp_path: Path) -> None:
    classes = fact_classes()
    assert len(classes) >= 14, [cls.__name__ for cls in classes]
    argv, keys = [], []
    for cls in classes:
        params = [p for p in inspect.signature(cls.command).parameters if p != "self"]
        missing = [p for p in params if p not in SAMPLES and p != "directory"]
        assert not missing, f"{cls.__name__}: add a sample value for {missing} to SAMPLES"
        args = [f"{p}={tmp_path if p == 'directory' else SAMPLES[p]}" for p in params]
        name = f"{cls.__module__}.{cls.__name__}"
        argv += [name, *args]
        keys.append(name)
    done = subprocess.run(
        [str(PYINFRA), "@local", "fact", *argv, "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)
    # pyinfra names a fact with arguments "NAME (arg=value, ...)".
    assert sorted(key.split(" ")[0] for key in printed) == sorted(keys)
    assert all(set(per_host) == {"@local"} for per_host in printed.values()), printed
    os_release = printed["ms4fleet_pyinfra.facts.OsReleaseFact"]["@local"]
    assert set(os_release) == {"id", "version_id", "key"} and os_release["id"], os_release
    assert set(printed["ms4fleet_pyinfra.facts.DriverState"]["@local"]) >= {"package", "version", "held"}
