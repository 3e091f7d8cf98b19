"""What the distributions and the collection declare matches what their code does: every third-party import
is a declared dependency (``ms4fleet`` and ``ms4fleet-sim``), one version everywhere it is written, the
ansible-core range is the collection's ``requires_ansible``, every plugin checks the controller's ms4fleet
package before it imports it, and a controller with another ms4fleet version gets one line saying what to
install."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import ms4fleet

ROOT = Path(__file__).resolve().parents[2]
# What this collection's plugins import as `ansible_collections.ms4fleet.fleet...` is the collection itself.
OWN = {"ms4fleet", "ms4fleet_pyinfra", "ms4fleet_ansible", "ms4fleet_sim", "ansible_collections"}
GUARD = "ansible_collections.ms4fleet.fleet.plugins.plugin_utils"
# A host-side script shipped alone imports a sibling shipped with it by its bare name (weights_verify).
HOSTSIDE = {path.stem for path in (ROOT / "src" / "ms4fleet" / "hostside").glob("*.py")}
# Imported only by host-side scripts that run inside the serving image (which brings them), never here.
SERVING_IMAGE_ONLY = {"torch": "src/ms4fleet/hostside/burnin.py"}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every absolute import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return sorted(out)


def _third_party(*bases: Path) -> dict[str, str]:
    """Top-level third-party module -> a file importing it."""
    found: dict[str, str] = {}
    for base in bases:
        for path in sorted(base.rglob("*.py")):
            for _, module, _ in _imports(path):
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top != "__future__" and top not in OWN | HOSTSIDE:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _declared(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}


@pytest.mark.parametrize(
    ("pyproject", "sources"),
    [
        (
            ROOT / "pyproject.toml",
            [
                ROOT / "src" / "ms4fleet",
                ROOT / "src" / "ms4fleet_pyinfra",
                ROOT / "src" / "ms4fleet_ansible",
                ROOT / "plugins",
            ],
        ),
        (ROOT / "sim" / "pyproject.toml", [ROOT / "sim" / "src" / "ms4fleet_sim"]),
    ],
    ids=["ms4fleet", "ms4fleet-sim"],
)
def test_every_import_is_a_declared_dependency(pyproject: Path, sources: list[Path]) -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = _declared(pyproject)
    undeclared = {
        module: (where, distributions.get(module))
        for module, where in _third_party(*sources).items()
        if not {canonicalize_name(d) for d in distributions.get(module, [module])} & declared
        and SERVING_IMAGE_ONLY.get(module) != where
    }
    assert undeclared == {}, f"imported but not in {pyproject.relative_to(ROOT)} dependencies"


def test_the_simulator_is_not_a_dependency_of_production() -> None:
    assert "ms4fleet-sim" not in _declared(ROOT / "pyproject.toml")
    assert "pytest" not in _declared(ROOT / "sim" / "pyproject.toml")


def test_the_example_inventories_need_no_simulator() -> None:
    """``ms4fleet plan inventory/example.py`` (and pyinfra) read every file under inventory/: with only the
    production package installed, none of them may import the simulator."""
    importing = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "inventory").rglob("*.py")
        for _, m, _ in _imports(p)
        if m.startswith("ms4fleet_sim")
    ]
    assert importing == []


def test_one_version_everywhere() -> None:
    version = ms4fleet.__version__
    assert yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"] == version
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert pins == [f"ms4fleet=={version}"]
    documented = sorted((ROOT / "plugins" / "modules").glob("*.py")) + sorted(
        (ROOT / "plugins" / "filter").glob("*.yml")
    )
    fragment = (ROOT / "plugins" / "doc_fragments" / "controller.py").read_text()
    for path in documented:
        # A module that extends the controller doc fragment states the requirement through it.
        text = fragment if "- ms4fleet.fleet.controller" in path.read_text() else path.read_text()
        assert f"ms4fleet == {version}, the Python package, on the controller" in text, path.name


def test_the_ansible_core_range_is_requires_ansible() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "ansible-core")
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    assert core.specifier == SpecifierSet(runtime["requires_ansible"])


def _guarded(imports: list[tuple[int, str, list[str]]], guards: set[str]) -> bool:
    """Whether a guard import comes before the file's first ms4fleet import (True when it has none)."""
    core_lines = [line for line, module, _ in imports if module.split(".")[0] == "ms4fleet"]
    guard = [line for line, module, names in imports if (module == GUARD and "core" in names) or module in guards]
    return not core_lines or bool(guard and guard[0] < min(core_lines))


def test_every_plugin_checks_the_controller_before_importing_the_core() -> None:
    """``plugin_utils/core.py`` raises the one-line requirement error; it must come before any ms4fleet import,
    imported by the file itself or by a plugin_utils module it imports first (the actions' base, ``action.py``)."""
    guards = {
        f"{GUARD}.{path.stem}"
        for path in (ROOT / "plugins" / "plugin_utils").glob("*.py")
        if path.stem != "core"
        and any(m == GUARD and "core" in names for _, m, names in _imports(path))
        and _guarded(_imports(path), set())
    }
    assert f"{GUARD}.action" in guards
    checked = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        imports = _imports(path)
        if not any(module.split(".")[0] == "ms4fleet" for _, module, _ in imports):
            continue
        assert _guarded(imports, guards), f"{path.relative_to(ROOT)} imports ms4fleet before {GUARD}.core"
        checked.append(path.name)
    assert {"probe.py", "headroom.py", "verify.py", "weights.py", "hostplan.py", "plan_filters.py"} <= set(checked)


def _collection_copy(tmp_path: Path, version: str) -> Path:
    """The checkout's collection (plugins, meta, galaxy.yml) under another version, in its own collections path."""
    target = tmp_path / "ansible_collections" / "ms4fleet" / "fleet"
    target.mkdir(parents=True)
    shutil.copytree(ROOT / "plugins", target / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "meta", target / "meta")
    galaxy = (ROOT / "galaxy.yml").read_text()
    (target / "galaxy.yml").write_text(re.sub(r"(?m)^version: .*$", f"version: {version}", galaxy))
    return tmp_path


def test_another_ms4fleet_version_gets_one_line_saying_what_to_install(tmp_path: Path) -> None:
    collections = _collection_copy(tmp_path, "9.9.9")
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_COLLECTIONS_PATH": str(collections)}
    python = (bin_dir / "ansible").read_text().splitlines()[0].removeprefix("#!")  # Ansible's own Python
    line = (
        f"ms4fleet.fleet 9.9.9 needs the ms4fleet Python package 9.9.9 on the controller, and {python} has "
        f"{ms4fleet.__version__}: {python} -m pip install ms4fleet==9.9.9"
    )
    action = subprocess.run(
        [str(bin_dir / "ansible"), "localhost", "-m", "ms4fleet.fleet.probe"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert action.returncode != 0
    errors = [x for x in (action.stdout + action.stderr).splitlines() if x.strip() and not x.startswith("[WARNING]")]
    assert errors == [f"[ERROR]: {line}"], action.stdout + action.stderr
    filtered = subprocess.run(
        [str(bin_dir / "ansible"), "localhost", "-m", "debug", "-a", "msg={{ [] | ms4fleet.fleet.rollout_serial }}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert filtered.returncode != 0
    assert f"The filter plugin 'ms4fleet.fleet.rollout_serial' failed: {line}" in filtered.stdout, filtered.stdout
