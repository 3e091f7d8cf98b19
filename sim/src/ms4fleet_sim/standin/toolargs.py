"""Minimal arguments that satisfy a tool's JSON schema: every required property, with a valid value.

This is what a model that "decided to call the tool" would emit, small enough to be predictable and
valid enough for a client to parse and check against the schema.
"""

from __future__ import annotations

from typing import Any

_PLACEHOLDER_STRING = "example"


def example(schema: Any) -> Any:
    """A value valid for ``schema`` (the subset of JSON Schema that tool definitions use)."""
    if not isinstance(schema, dict):
        return {}
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return example(options[0])
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        return {name: example(properties.get(name, {})) for name in required}
    if kind == "array":
        count = int(schema.get("minItems", 0))
        return [example(schema.get("items", {})) for _ in range(count)]
    if kind == "integer":
        return _number(schema, integer=True)
    if kind == "number":
        return _number(schema, integer=False)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema)


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    value: float = 1 if low is None else low + (1 if "exclusiveMinimum" in schema and low is not None else 0)
    high = schema.get("maximum")
    if high is not None and value > high:
        value = high
    return int(value) if integer else float(value)


def _string(schema: dict[str, Any]) -> str:
    formats = {
        "date": "2026-01-01",
        "date-time": "2026-01-01T00:00:00Z",
        "email": "user@example.com",
        "uri": "https://example.com",
        "uuid": "00000000-0000-0000-0000-000000000000",
    }
    text = formats.get(str(schema.get("format")), _PLACEHOLDER_STRING)
    min_length = int(schema.get("minLength", 0))
    if len(text) < min_length:
        text = text + "x" * (min_length - len(text))
    max_length = schema.get("maxLength")
    if isinstance(max_length, int):
        text = text[:max_length]
    return text
