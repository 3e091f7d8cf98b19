"""Fault switches that tests flip to make the stand-in fail the ways real vLLM fails.

``faults.json`` is an object; absent keys and an absent file mean "no fault":

* ``health_503`` (bool): ``/health`` and ``/ping`` answer 503 while set;
* ``crash_on_first_decode`` (bool): the next completion fails with EngineDeadError, ``/health`` turns 503
  and the server shuts down shortly after, exiting 0, as vLLM does when its engine core dies;
* ``slow_start_s`` (number): extra seconds before the port is bound;
* ``refuse_start`` (bool or message): start-up fails with that message, exit status 1;
* ``decode_delay_ms`` (number): delay per generated token.

The file is read at start and again for every request, so a test can flip a switch on a running server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_REFUSAL = "simulated start-up refusal (fault switch refuse_start)"


@dataclass(frozen=True)
class Faults:
    health_503: bool = False
    crash_on_first_decode: bool = False
    slow_start_s: float = 0.0
    refuse_start: str | None = None
    decode_delay_ms: float = 0.0


def read(path: Path) -> Faults:
    """The switches in ``path``; a missing, unreadable or malformed file means no fault."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Faults()
    if not isinstance(data, dict):
        return Faults()
    refuse = data.get("refuse_start")
    return Faults(
        health_503=bool(data.get("health_503", False)),
        crash_on_first_decode=bool(data.get("crash_on_first_decode", False)),
        slow_start_s=float(data.get("slow_start_s") or 0.0),
        refuse_start=(refuse if isinstance(refuse, str) and refuse else DEFAULT_REFUSAL) if refuse else None,
        decode_delay_ms=float(data.get("decode_delay_ms") or 0.0),
    )
