"""``/usr/sbin/runc`` on a sim host: Debian's runc, after lowering resource limits the machine cannot grant.

The production unit starts vLLM with ``--ulimit memlock=-1``. Raising RLIMIT_MEMLOCK needs
CAP_SYS_RESOURCE, which real hosts' dockerd has but a container on a CI machine may lack (this project's CI
machine grants it to nobody). The host image diverts the real binary to ``/usr/sbin/runc.real``; this shim
clamps each rlimit of a container's process (config.json at create, the --process file at exec) to the hard
limit it can actually set, then runs runc.
docs/simulation.md lists this as a difference from a real host.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

REAL_RUNC = "/usr/sbin/runc.real"


def _option(argv: list[str], names: tuple[str, ...]) -> str | None:
    for position, arg in enumerate(argv):
        if arg in names and position + 1 < len(argv):
            return argv[position + 1]
        for name in names:
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def spec_files(argv: list[str]) -> list[Path]:
    """The OCI files whose rlimits runc will apply: the bundle's config.json (create/run) or --process (exec)."""
    if "create" in argv or "run" in argv:
        return [Path(_option(argv, ("--bundle", "-b")) or Path.cwd()) / "config.json"]
    if "exec" in argv:
        process = _option(argv, ("--process", "-p"))
        return [Path(process)] if process else []
    return []


def clamp(rlimits: list[dict[str, Any]]) -> bool:
    """Lower soft/hard limits above this process's hard limit; return whether anything changed."""
    changed = False
    for limit in rlimits:
        number = getattr(resource, str(limit.get("type", "")), None)
        if not isinstance(number, int):
            continue
        _, hard_now = resource.getrlimit(number)
        if hard_now == resource.RLIM_INFINITY:
            continue
        for key in ("hard", "soft"):
            if int(limit.get(key, 0)) > hard_now or int(limit.get(key, 0)) < 0:
                limit[key] = hard_now
                changed = True
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for path in spec_files(argv):
        if not path.is_file():
            continue
        spec = json.loads(path.read_text(encoding="utf-8"))
        # config.json nests the process; an exec --process file is the process itself.
        process = spec.get("process", spec) if "ociVersion" in spec else spec
        if clamp(process.get("rlimits", [])):
            path.write_text(json.dumps(spec), encoding="utf-8")
    if not os.path.exists(REAL_RUNC):
        sys.stderr.write("runc: not installed (install docker.io or runc)\n")
        return 127
    os.execv(REAL_RUNC, ["runc", *argv])
    return 127
