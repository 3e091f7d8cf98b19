"""Real links for the sim: a token bucket on a container's egress (``tc tbf`` on its ``eth0``), and the bytes
that left it (the qdisc's counter), so that staging figures on one machine mean what they would on a fleet.

+ ``throttle(container, rate)``: e.g. ``throttle("ms4fleet-sim-x-1", "200mbit")`` (needs NET_ADMIN, which
  the sim's hosts and mirror have); ``unthrottle(container)``.
+ ``egress_bytes(container)``: bytes sent through the root qdisc since it was installed.
"""

from __future__ import annotations

import re

from ms4fleet_sim import dockercli

DEVICE = "eth0"
# A burst of a few packets at 200 Mbit/s keeps the rate honest over any interval a bench measures.
BURST = "256kb"
LATENCY = "100ms"
_SENT = re.compile(r"Sent (\d+) bytes")
RATE = re.compile(r"\A[0-9]+(\.[0-9]+)?(kbit|mbit|gbit)\Z")


def throttle(container: str, rate: str) -> None:
    if not RATE.match(rate):
        raise ValueError(f"rate {rate!r}: write it as tc reads it, e.g. 200mbit")
    tbf = ["tc", "qdisc", "replace", "dev", DEVICE, "root", "tbf", "rate", rate, "burst", BURST, "latency", LATENCY]
    dockercli.run(["exec", container, *tbf])


def unthrottle(container: str) -> None:
    dockercli.run(["exec", container, "tc", "qdisc", "del", "dev", DEVICE, "root"], check=False)


def egress_bytes(container: str) -> int:
    text = dockercli.out(["exec", container, "tc", "-s", "qdisc", "show", "dev", DEVICE])
    match = _SENT.search(text)
    if match is None:
        raise RuntimeError(f"{container}: no qdisc counter on {DEVICE}: {text.strip()}")
    return int(match.group(1))
