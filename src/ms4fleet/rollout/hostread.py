"""What a host runs now, read in one round trip by both engines: its release record, then each ms4fleet vLLM
unit installed on it with its state and the sha256 of its file (``changes.deploy_change`` trusts the record
only where these equal its units).

+ ``READ_SCRIPT``: the shell that prints it; ``parse(text)``: the printed text as a ``HostRead``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ms4fleet import paths
from ms4fleet.rollout.release import RELEASE_FILE

_SEPARATOR = "--ms4fleet-units--"
READ_SCRIPT = (
    f"cat {RELEASE_FILE} 2>/dev/null; echo {_SEPARATOR}; "
    f'for f in {paths.SYSTEMD_DIR}/{paths.UNIT_PREFIX}-*.service; do [ -f "$f" ] || continue; '
    'u=$(basename "$f"); echo "$u $(systemctl is-active "$u" 2>/dev/null || true) $(sha256sum < "$f" | cut -c1-64)"; '
    "done"
)


@dataclass(frozen=True)
class HostRead:
    record_text: str
    # unit name -> `systemctl is-active` ("unknown" where it printed nothing)
    active: dict[str, str] = field(default_factory=dict)
    # unit name -> sha256 of its file
    sha256: dict[str, str] = field(default_factory=dict)


def parse(text: str) -> HostRead:
    record_text, _, units_text = text.partition(_SEPARATOR)
    active, digests = {}, {}
    for line in units_text.splitlines():
        bits = line.split()
        if bits:
            active[bits[0]] = bits[1] if len(bits) > 1 else "unknown"
            if len(bits) > 2:
                digests[bits[0]] = bits[2]
    return HostRead(record_text, active, digests)
