"""What the core's apt key installer (``hostside/apt_key.py``) answered, as both engines read it.

+ ``result(lines)``: its JSON line (``{"changed", "fingerprints", "error"}``), or ``NO_RESULT`` as the error.
"""

from __future__ import annotations

import json
from typing import Any

NO_RESULT = "the apt key installer printed no result"


def result(lines: list[str]) -> dict[str, Any]:
    for line in reversed(lines):
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and {"changed", "fingerprints", "error"} <= answer.keys():
            return answer
    return {"changed": False, "fingerprints": [], "error": NO_RESULT}
