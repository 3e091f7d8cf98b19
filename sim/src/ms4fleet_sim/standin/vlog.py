"""Log lines shaped like vLLM's: ``(APIServer pid=7) INFO 11-29 13:51:15 [api_server.py:1850] text``.

vLLM logs to stdout; the process prefix names the vLLM process that would have printed the line
(API server, engine core, tensor-parallel worker), so log scrapers written against real vLLM match.
"""

from __future__ import annotations

import os
import sys
import threading
import time

_lock = threading.Lock()


def log(level: str, where: str, message: str, process: str = "APIServer") -> None:
    """Print one line per line of ``message``, each with vLLM's prefix."""
    stamp = time.strftime("%m-%d %H:%M:%S")
    prefix = f"({process} pid={os.getpid()}) {level} {stamp} [{where}]"
    with _lock:
        for line in message.splitlines() or [""]:
            sys.stdout.write(f"{prefix} {line}\n")
        sys.stdout.flush()


def info(where: str, message: str, process: str = "APIServer") -> None:
    log("INFO", where, message, process)


def warning(where: str, message: str, process: str = "APIServer") -> None:
    log("WARNING", where, message, process)


def error(where: str, message: str, process: str = "APIServer") -> None:
    log("ERROR", where, message, process)


def uvicorn(message: str) -> None:
    """Uvicorn's own lines, which vLLM prints unprefixed by level and time."""
    with _lock:
        sys.stdout.write(f"(APIServer pid={os.getpid()}) INFO:     {message}\n")
        sys.stdout.flush()
