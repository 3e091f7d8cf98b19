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
