"""``nvidia-container-runtime`` of the simulated toolkit: runc plus the NVIDIA prestart hook.

Like the real runtime in legacy mode, on ``create`` it adds ``nvidia-container-runtime-hook prestart`` to
the bundle's config.json when the container asks for GPUs (``NVIDIA_VISIBLE_DEVICES`` in its environment)
and the hook is not there yet (``docker run --gpus`` already adds it), then hands over to runc.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

HOOK = "/usr/bin/nvidia-container-runtime-hook"


def bundle_of(argv: list[str]) -> Path | None:
    if "create" not in argv:
        return None
    for position, arg in enumerate(argv):
        if arg in ("--bundle", "-b") and position + 1 < len(argv):
            return Path(argv[position + 1])
        if arg.startswith("--bundle="):
            return Path(arg.split("=", 1)[1])
    return Path.cwd()


def add_hook(config: dict[str, Any]) -> bool:
    env = config.get("process", {}).get("env", [])
    if not any(item.startswith("NVIDIA_VISIBLE_DEVICES=") for item in env):
        return False
    prestart = config.setdefault("hooks", {}).setdefault("prestart", [])
    if any(str(h.get("path", "")).endswith("nvidia-container-runtime-hook") for h in prestart):
        return False
    prestart.append({"path": HOOK, "args": ["nvidia-container-runtime-hook", "prestart"]})
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    bundle = bundle_of(argv)
    if bundle is not None:
        config_path = bundle / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if add_hook(config):
            config_path.write_text(json.dumps(config), encoding="utf-8")
    os.execvp("runc", ["runc", *argv])
    return 127
