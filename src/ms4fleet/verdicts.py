"""The controller's memory of hosts the full converged check passed, so the next run can skip it.

Like git's index, each entry keeps what is needed to know that nothing the full check read has changed
since: the digest of what the core wanted then (``Desired.digest``), the GPUs its plan left out (the
health check's exclusions then: the next run plans with them before it reads the health again) and the
sha256 of the host's fingerprint (stat identity of every file the check reads, boot and machine ids,
loaded driver). A match,
with the live parts (units active, image present) still as wanted, is the same verdict at a fraction of
the host's CPU; any other answer runs the full check. The weights verifier trusts the same stat tuple.

Entries live in ``$MS4FLEET_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ms4fleet/converged``, else
``~/.cache/ms4fleet/converged``), one 0600 file per host; ``MS4FLEET_CACHE_DIR=`` (empty) turns the quick
check off. Nothing secret is stored. A lost or unwritable cache only costs the full check.

+ ``load(name)``, ``store(name, verdict)``, ``forget(name)``: ``store("gpu-1", Verdict(...))``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ms4fleet.health import Exclusion, exclusions_from_json
from ms4fleet.provision import OsRelease

CACHE_ENV = "MS4FLEET_CACHE_DIR"


@dataclass(frozen=True)
class Verdict:
    digest: str
    os: OsRelease
    fingerprint: str
    excluded: tuple[Exclusion, ...] = ()


def cache_dir() -> Path | None:
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ms4fleet" / "converged"


def _entry(name: str) -> Path | None:
    root = cache_dir()
    # Inventory names may hold anything; the file name must not.
    return None if root is None else root / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.json"


def load(name: str) -> Verdict | None:
    path = _entry(name)
    if path is None:
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("host") != name:
            return None
        excluded = exclusions_from_json(record["excluded"], name)
        return Verdict(record["digest"], OsRelease(**record["os"]), record["fingerprint"], excluded)
    except (OSError, ValueError, KeyError, TypeError):  # HealthError is a ValueError
        return None


def store(name: str, verdict: Verdict) -> None:
    path = _entry(name)
    if path is None:
        return
    record = {**asdict(verdict), "host": name, "excluded": [e.to_json() for e in verdict.excluded]}
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".entry-")
    except OSError:
        return  # the next run does the full check again; never a reason to fail a deploy
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.replace(temp, path)
    except OSError:
        Path(temp).unlink(missing_ok=True)


def forget(name: str) -> None:
    path = _entry(name)
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
