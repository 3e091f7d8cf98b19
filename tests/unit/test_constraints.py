"""constraints.txt pins every Python dependency of the controller, and this interpreter runs exactly those
versions (``make install`` installs with ``-c constraints.txt``, so CI does)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"constraints.txt: {line!r} is not NAME==VERSION"
            out[canonicalize_name(name)] = version.strip()
    return out


def declared() -> set[str]:
    names = set()
    for path in (ROOT / "pyproject.toml", ROOT / "sim" / "pyproject.toml"):
        project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
        requirements = [*project.get("dependencies", []), *project.get("optional-dependencies", {}).get("dev", [])]
        names |= {canonicalize_name(Requirement(r).name) for r in requirements}
    return names - {"ms4fleet"}


def test_every_declared_dependency_is_pinned() -> None:
    missing = sorted(declared() - pins().keys())
    assert not missing, f"not in constraints.txt (run `make constraints`): {missing}"


def test_this_interpreter_runs_the_pinned_versions() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {
        name: (version, installed.get(name)) for name, version in pins().items() if installed.get(name) != version
    }
    assert not differ, f"pinned -> installed: {differ}"
