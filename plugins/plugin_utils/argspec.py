"""An action's argument spec read from its module's DOCUMENTATION, so each option is written once."""

from __future__ import annotations

from typing import Any

import yaml

# The keys of a documented option that ``validate_argument_spec`` understands.
SPEC_KEYS = ("type", "elements", "default", "required", "choices")


def from_documentation(documentation: str) -> dict[str, dict[str, Any]]:
    options = yaml.safe_load(documentation).get("options") or {}
    return {name: {k: v for k, v in option.items() if k in SPEC_KEYS} for name, option in options.items()}
