"""Where the sim keeps what it builds (images' inputs, apt repositories, keys) and how it names versions.

Builds are cached by a hash of their recipe under a stable directory shared by every checkout on the
machine (``/var/cache/ms4fleet/sim``, or ``$MS4FLEET_SIM_CACHE``), so CI and developers reuse them; images
are named ``ms4fleet-sim/<name>:<hash>`` (prefix overridable with ``$MS4FLEET_SIM_IMAGE_NAMESPACE``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path


def cache_root() -> Path:
    root = Path(os.environ.get("MS4FLEET_SIM_CACHE", "/var/cache/ms4fleet/sim"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def image_namespace() -> str:
    """Repository prefix of the images the sim builds (a benchmark's cold run uses its own)."""
    return os.environ.get("MS4FLEET_SIM_IMAGE_NAMESPACE", "ms4fleet-sim")


def recipe_hash(*parts: object) -> str:
    """A short stable hash of JSON-serialisable recipe parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def package_sources_hash(*subpackages: str) -> str:
    """Hash of every file under the given ``ms4fleet_sim`` subpackages (their code ends up in images)."""
    digest = hashlib.sha256()
    base = resources.files("ms4fleet_sim")
    for sub in subpackages:
        root = Path(str(base.joinpath(sub)))
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def build_lock(name: str) -> Iterator[None]:
    """Serialise builds of one artefact across processes (tests and a developer may run ``up`` at once)."""
    lock_path = cache_root() / f".{name}.lock"
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
