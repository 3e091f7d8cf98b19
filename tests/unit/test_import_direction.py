"""The architecture's import rules, checked on the source: core decides, engines apply, sim stays apart.

Every import counts: top-level, lazy (inside a function), relative, and ``importlib.import_module("...")``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Where each tree's modules live, and the dotted prefix they are imported under.
PACKAGE_ROOTS = (
    (ROOT / "src", ""),
    (ROOT / "sim" / "src", ""),
    (ROOT / "plugins", "ansible_collections.ms4fleet.fleet.plugins"),
)
ENGINE_FRAMEWORKS = ("pyinfra", "pyinfra_cli", "ansible", "ansible_collections")
PYINFRA_ENGINE = ("ms4fleet_pyinfra", "pyinfra", "pyinfra_cli")
ANSIBLE_ENGINE = ("ms4fleet_ansible", "ansible", "ansible_collections")


def _module_index() -> dict[str, Path]:
    """Dotted name -> file, for every module under src/, sim/src/ and the collection's plugins/."""
    index: dict[str, Path] = {}
    for base, prefix in PACKAGE_ROOTS:
        for path in base.rglob("*.py"):
            if ".egg-info" in str(path):
                continue
            parts = list(path.relative_to(base).with_suffix("").parts)
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            index[".".join(p for p in (prefix, *parts) if p)] = path
    return index


INDEX = _module_index()
NAMES = {path: name for name, path in INDEX.items()}


def _targets(path: Path) -> set[str]:
    """What ``path`` imports, as dotted names: resolved to a module of the index where one matches (``from
    ms4fleet.rollout import cli`` is ``ms4fleet.rollout.cli``), else as written (third-party)."""
    name = NAMES.get(path, path.stem)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    raw: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            raw += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            raw += [f"{base}.{a.name}" if f"{base}.{a.name}" in INDEX else base for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            raw.append(node.args[0].value)
    return set(raw)


def _known(target: str) -> str | None:
    """The module of the index that ``target`` is, or is inside of."""
    while target and target not in INDEX:
        target = target.rpartition(".")[0]
    return target or None


def _python_files(*parts: str) -> list[Path]:
    base = ROOT.joinpath(*parts)
    return [base] if base.is_file() else sorted(p for p in base.rglob("*.py") if ".egg-info" not in str(p))


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(_targets(path))
        if name.split(".")[0] in forbidden
    ]


@pytest.mark.parametrize(
    ("where", "forbidden"),
    [
        # The core imports no engine, no engine framework and not the simulation.
        (("src", "ms4fleet"), ("ms4fleet_pyinfra", "ms4fleet_ansible", "ms4fleet_sim", *ENGINE_FRAMEWORKS)),
        # The pyinfra engine (its package, deploy.py, the checkout's pre-connect config.py) never imports the
        # Ansible engine (or Ansible), nor the simulation.
        (("src", "ms4fleet_pyinfra"), (*ANSIBLE_ENGINE, "ms4fleet_sim")),
        (("deploy.py",), (*ANSIBLE_ENGINE, "ms4fleet_sim")),
        (("config.py",), (*ANSIBLE_ENGINE, "ms4fleet_sim")),
        # The Ansible engine (the collection's plugins and its inventory reader) never imports the pyinfra
        # engine (or pyinfra), nor the simulation.
        (("src", "ms4fleet_ansible"), (*PYINFRA_ENGINE, "ms4fleet_sim")),
        (("plugins",), (*PYINFRA_ENGINE, "ms4fleet_sim")),
        # Example inventories are data for either engine: they import neither engine nor the simulation.
        (("inventory",), ("ms4fleet_pyinfra", "ms4fleet_ansible", "ms4fleet_sim", *ENGINE_FRAMEWORKS)),
    ],
    ids=["core", "pyinfra-engine", "deploy.py", "config.py", "ansible-inventory-reader", "ansible-engine", "inventory"],
)
def test_import_direction(where: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    files = _python_files(*where)
    assert files, f"nothing to check under {'/'.join(where)}"
    assert _violations(files, forbidden) == []


def test_nothing_outside_the_simulation_and_its_tests_names_it() -> None:
    """No shipped Python imports the simulation, and no role, playbook or inventory names it at all."""
    shipped = [p for p in _python_files("src") if "ms4fleet_sim" not in p.parts]
    shipped += _python_files("plugins") + _python_files("deploy.py") + _python_files("config.py")
    assert _violations(shipped, ("ms4fleet_sim",)) == []
    named = [
        str(path.relative_to(ROOT))
        for part in ("inventory", "roles", "playbooks", "plugins")
        for path in sorted((ROOT / part).rglob("*"))
        if path.is_file() and "ms4fleet_sim" in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert named == []


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in INDEX.items():
        edges = {_known(t) for t in _targets(path)}
        # A package's own submodules and its parents are not edges (importing a.b runs a's __init__ first).
        graph[name] = {k for k in edges if k and k != name and not name.startswith(k + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk meets (each as the path that closes it)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return cycles


def test_the_cycle_detector_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_lazy_relative_and_importlib_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import importlib\n"
        "def f():\n"
        "    from ms4fleet.rollout import cli\n"
        "    importlib.import_module('ms4fleet.weights.commands')\n"
    )
    assert {"ms4fleet.rollout.cli", "ms4fleet.weights.commands"} <= _targets(module)


def test_no_import_cycles() -> None:
    graph = _graph()
    assert "ansible_collections.ms4fleet.fleet.plugins.plugin_utils.hostplan" in graph
    assert _cycles(graph) == []


def _is_cli(module: str) -> bool:
    """A command-line module: ``cli`` or ``__main__`` (argument parsing, exit codes, printing)."""
    return module.rpartition(".")[2] in {"cli", "__main__"}


def test_engines_import_no_cli_module() -> None:
    """Engine code takes constants and helpers from core modules, never from a command-line module (an engine's
    own command, e.g. ``ms4fleet_pyinfra/rollout/cli.py``, may use the core's argument helpers)."""
    engine = [
        p
        for p in _python_files("src", "ms4fleet_pyinfra") + _python_files("src", "ms4fleet_ansible")
        if not _is_cli(NAMES[p])
    ]
    engine += _python_files("plugins") + _python_files("deploy.py") + _python_files("config.py")
    bad = [
        f"{path.relative_to(ROOT)} imports {known}"
        for path in engine
        for target in sorted(_targets(path))
        if (known := _known(target)) is not None and _is_cli(known)
    ]
    assert bad == []
