"""``/usr/sbin/runc`` on a sim host: Debian's runc, after lowering resource limits the machine cannot grant.

The production unit starts vLLM with ``--ulimit memlock=-1``. Raising RLIMIT_MEMLOCK needs
CAP_SYS_RESOURCE, which real hosts' dockerd has but a container on a CI machine may lack (this project's CI
machine grants it to nobody). The host image diverts the real binary to ``/usr/sbin/runc.real``; this shim
clamps each rlimit in the bundle's config.json to the hard limit it can actually set, then runs runc.
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


def _bundle(argv: list[str]) -> Path | None:
    if "create" not in argv and "run" not in argv:
        return None
    for position, arg in enumerate(argv):
        if arg in ("--bundle", "-b") and position + 1 < len(argv):
            return Path(argv[position + 1])
        if arg.startswith("--bundle="):
            return Path(arg.split("=", 1)[1])
    return Path.cwd()


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
    bundle = _bundle(argv)
    if bundle is not None and (bundle / "config.json").is_file():
        path = bundle / "config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        if clamp(config.get("process", {}).get("rlimits", [])):
            path.write_text(json.dumps(config), encoding="utf-8")
    if not os.path.exists(REAL_RUNC):
        sys.stderr.write("runc: not installed (install docker.io or runc)\n")
        return 127
    os.execv(REAL_RUNC, ["runc", *argv])
    return 127
