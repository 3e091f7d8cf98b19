"""``ansible-galaxy collection build`` from a working tree packs only the collection, also from a tree that
holds what builds and tools leave behind (build/ and *.egg-info from ``pip install .``, dist/ from
``python -m build``, a venv, the sim's state, caches, logs, an earlier collection tarball)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from tests.packaging.worktree import tracked_copy

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_GALAXY = Path(sys.executable).with_name("ansible-galaxy")
# The collection: what galaxy.yml's build_ignore must leave, exactly.
TOP_LEVEL = {
    "FILES.json",
    "MANIFEST.json",
    "LICENSE",
    "README.md",
    "requirements.txt",
    "changelogs",
    "docs",
    "meta",
    "playbooks",
    "plugins",
    "roles",
}
# What a working tree collects beside the sources (files, relative to the tree).
LEFTOVERS = [
    "build/lib/ms4fleet/__init__.py",
    "build/bdist.linux-x86_64/x",
    "src/ms4fleet.egg-info/PKG-INFO",
    "sim/build/lib/ms4fleet_sim/__init__.py",
    "dist/ms4fleet-0.1.0-py3-none-any.whl",
    "dist/ms4fleet-0.1.0.tar.gz",
    ".venv/bin/python",
    "venv/bin/python",
    ".sim/pkg/inventory.py",
    ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.11/x.json",
    ".ruff_cache/0.1/x",
    ".ansible/collections/x",
    ".whl/x.whl",
    "pyinfra-debug.log",
    "plugins/filter/__pycache__/plan.cpython-311.pyc",
    "ms4fleet-fleet-0.0.9.tar.gz",
]


def _tree(target: Path) -> Path:
    """The checkout's tracked files, then the leftovers."""
    tracked_copy(target)
    for name in LEFTOVERS:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text("left behind\n")
    return target


def test_the_tarball_holds_only_the_collection(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    out = tmp_path / "out"
    subprocess.run(
        [str(ANSIBLE_GALAXY), "collection", "build", "--output-path", str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (tarball,) = out.glob("ms4fleet-fleet-*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = [m.name for m in archive.getmembers()]
    assert {name.split("/")[0] for name in names} == TOP_LEVEL
    assert sorted(n for n in names if n.startswith("docs/") or n == "docs") == [
        "docs",
        "docs/ansible.md",
        "docs/architecture.md",
        "docs/endpoints.md",
        "docs/health.md",
        "docs/img",
        "docs/img/plan.png",
        "docs/img/rollout-report.png",
        "docs/monitoring.md",
        "docs/probe.md",
        "docs/rollout.md",
        "docs/sizing.md",
        "docs/verification.md",
        "docs/weights.md",
    ]
    assert not [n for n in names if n.endswith((".pyc", ".log", ".whl", ".tar.gz")) or "__pycache__" in n]
    playbooks = sorted(n for n in names if n.startswith("playbooks/"))
    # The playbooks and the task files they import (playbooks/tasks/), nothing else (not the collections link).
    shipped = [*(ROOT / "playbooks").glob("*.yml"), *(ROOT / "playbooks" / "tasks").glob("*.yml")]
    assert playbooks == sorted(["playbooks/tasks", *(p.relative_to(ROOT).as_posix() for p in shipped)])
    plugins = {n for n in names if n.startswith("plugins/") and n.endswith((".py", ".yml"))}
    tracked = {str(p.relative_to(ROOT)) for p in (ROOT / "plugins").rglob("*") if p.suffix in (".py", ".yml")}
    assert plugins == tracked
