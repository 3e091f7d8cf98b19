"""The architecture's import rules, checked on the source: core decides, engines apply, sim stays apart."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _python_files(*parts: str) -> list[Path]:
    base = ROOT.joinpath(*parts)
    return [base] if base.is_file() else sorted(base.rglob("*.py"))


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in _imports(path)
        if name.split(".")[0] in forbidden
    ]


@pytest.mark.parametrize(
    ("where", "forbidden"),
    [
        # The core imports no engine, no engine framework and not the simulation.
        (
            ("src", "ms4fleet"),
            (
                "ms4fleet_pyinfra",
                "ms4fleet_ansible",
                "ms4fleet_sim",
                "pyinfra",
                "pyinfra_cli",
                "ansible",
                "ansible_collections",
            ),
        ),
        # The pyinfra engine never imports the Ansible engine (or Ansible), nor the simulation.
        (("src", "ms4fleet_pyinfra"), ("ansible", "ansible_collections", "ms4fleet_ansible", "ms4fleet_sim")),
        # The Ansible engine's inventory reader never imports the pyinfra engine (or pyinfra), nor the simulation.
        (("src", "ms4fleet_ansible"), ("ms4fleet_pyinfra", "pyinfra", "pyinfra_cli", "ms4fleet_sim")),
        (("deploy.py",), ("ansible", "ansible_collections", "ms4fleet_sim")),
        # The Ansible engine never imports the pyinfra engine (or pyinfra), nor the simulation.
        (("plugins",), ("ms4fleet_pyinfra", "pyinfra", "pyinfra_cli", "ms4fleet_sim")),
    ],
    ids=["core", "pyinfra-engine", "ansible-inventory-reader", "deploy.py", "ansible-engine"],
)
def test_import_direction(where: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    files = _python_files(*where)
    assert files, f"nothing to check under {'/'.join(where)}"
    assert _violations(files, forbidden) == []


def test_nothing_outside_the_simulation_and_its_tests_imports_it() -> None:
    shipped = [p for p in ROOT.joinpath("src").rglob("*.py") if "ms4fleet_sim" not in p.parts]
    shipped += _python_files("plugins") + _python_files("deploy.py")
    assert _violations(shipped, ("ms4fleet_sim",)) == []


def _module_index() -> dict[str, Path]:
    """Dotted name -> file, for every package under src/ and sim/src/."""
    index: dict[str, Path] = {}
    for base in (ROOT / "src", ROOT / "sim" / "src"):
        for path in base.rglob("*.py"):
            if ".egg-info" in str(path):
                continue
            parts = list(path.relative_to(base).with_suffix("").parts)
            index[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return index


def _edges(name: str, path: Path, index: dict[str, Path]) -> set[str]:
    """Modules ``name`` imports, at any depth (lazy ones and ``importlib.import_module("...")`` included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in index else base for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        for target in targets:
            known = target
            while known and known not in index:
                known = known.rpartition(".")[0]
            if known and known != name and not name.startswith(known + "."):
                found.add(known)
    return found


def test_no_import_cycles() -> None:
    index = _module_index()
    graph = {name: _edges(name, path, index) for name, path in index.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_engines_import_no_cli_module() -> None:
    """Engine code takes constants and helpers from core modules, never from a command-line module (an engine's
    own command, e.g. ``ms4fleet_pyinfra/rollout/cli.py``, may use the core's argument helpers)."""
    engine = [
        p
        for p in _python_files("src", "ms4fleet_pyinfra") + _python_files("src", "ms4fleet_ansible")
        if p.name != "cli.py"
    ]
    engine += _python_files("plugins") + _python_files("deploy.py")
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in engine
        for name in _imports(path)
        if name.startswith("ms4fleet") and name.rpartition(".")[2].endswith("cli")
    ]
    assert bad == []
