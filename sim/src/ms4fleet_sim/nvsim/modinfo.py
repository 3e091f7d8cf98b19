"""``modinfo`` of a sim host whose profile models kernels: ``modinfo [-F FIELD] nvidia`` answers from the
booted kernel's ``/lib/modules/<kernel>/**/nvidia.ko*`` (``nvsim.kernel``), as the real one does for
``uname -r``; any other module, or a host without modelled kernels, goes to the real modinfo."""

from __future__ import annotations

import json
import os
import sys

from ms4fleet_sim.nvsim import kernel

REAL = "/usr/sbin/modinfo"


def main() -> int:
    args = sys.argv[1:]
    field = None
    if len(args) == 3 and args[0] == "-F":
        field, args = args[1], args[2:]
    booted = kernel.booted_kernel()
    if args != ["nvidia"] or booted is None:
        os.execv(REAL, [REAL, *sys.argv[1:]])
    path = kernel.module_file(booted)
    if path is None:
        print("modinfo: ERROR: Module nvidia not found.", file=sys.stderr)
        return 1
    module = json.loads(path.read_text(encoding="utf-8"))
    fields = {"filename": str(path), "version": module["version"], "license": module.get("license", "")}
    if field is not None:
        print(fields.get(field, ""))
    else:
        for key, value in fields.items():
            print(f"{key + ':':<16}{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
