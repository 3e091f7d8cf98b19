"""pyinfra's "Detected changes" table of the ms4fleet deploy, read from a captured run's output."""

from __future__ import annotations

import re


def detected_changes(text: str) -> dict[str, str]:
    """Operation name -> its Change cell (``-`` when nothing changes, else the count and hosts)."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\s+ms4fleet \| (.+?)\s{2,}(\S+(?: \(@local\))?)\s{2,}", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows
