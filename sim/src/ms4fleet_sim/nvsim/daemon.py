"""Daemonising for the simulated NVIDIA services (systemd ``Type=forking`` units)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def daemonize(pid_file: Path | None = None) -> None:
    """Fork; the parent exits 0 (systemd then considers the unit started), the child idles until stopped."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if pid_file is not None:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(3600)
