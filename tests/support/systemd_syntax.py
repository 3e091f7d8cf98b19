"""How systemd reads what ms4fleet writes, reimplemented from systemd's own rules for tests.

+ ``unit_lines(text)``: ``[(section, key, value), ...]`` as systemd's unit parser sees them (comments,
  ``\\``-continued lines).
+ ``exec_argv(value)``: an ExecStart= value -> argv: systemd's unquoting and C unescaping
  (extract_first_word with EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE), then ``%`` specifiers, then ``$`` expansion.
+ ``environment(value)``: an Environment= value -> ``{name: value}`` (the same unquoting and specifiers, no ``$``).
+ ``env_file(text)``: an EnvironmentFile= body -> ``{name: value}`` (systemd's parse_env_file state machine).
Anything systemd would expand (a specifier, a variable) comes back as ``<%x>`` / ``<$NAME>``, so a test that
compares with the intended value fails; anything systemd would refuse raises ``SystemdSyntaxError``.
"""

from __future__ import annotations

import re

# Specifiers systemd knows (systemd.unit(5)); an unknown one makes systemd ignore the whole line.
_SPECIFIERS = set("aAbBCEfgGhHiIjJlLmMnNopPqsStTuUvVwW")
_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_C_ESCAPES |= {'"': '"', "'": "'", "s": " "}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# systemd's WHITESPACE: ASCII only (a no-break space is an ordinary character to it).
_WHITESPACE = " \t\n\r"


class SystemdSyntaxError(ValueError):
    """systemd would refuse or ignore this line."""


def unit_lines(text: str) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in text.split("\n"):
        line = pending + raw
        if line.endswith("\\") and not line.lstrip().startswith(("#", ";")):
            pending = line[:-1] + " "
            continue
        pending = ""
        stripped = line.strip(_WHITESPACE)
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("["):
            section = stripped.strip("[]")
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            raise SystemdSyntaxError(f"not an assignment: {line!r}")
        out.append((section, key.strip(_WHITESPACE), value.strip(_WHITESPACE)))
    return out


def _unescape(value: str, i: int) -> tuple[str, int]:
    """One C escape after a backslash at ``value[i - 1]``: (text, next index)."""
    if i >= len(value):
        raise SystemdSyntaxError("trailing backslash")
    char = value[i]
    if char in _C_ESCAPES:
        return _C_ESCAPES[char], i + 1
    if char == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", value[i + 1 : i + 3]):
        return chr(int(value[i + 1 : i + 3], 16)), i + 3
    if char in "01234567" and re.fullmatch(r"[0-7]{3}", value[i : i + 3]):
        return chr(int(value[i : i + 3], 8)), i + 3
    if char in "uU":
        width = 4 if char == "u" else 8
        digits = value[i + 1 : i + 1 + width]
        if re.fullmatch(rf"[0-9a-fA-F]{{{width}}}", digits):
            return chr(int(digits, 16)), i + 1 + width
    raise SystemdSyntaxError(f"invalid escape \\{char}")


def words(value: str) -> list[str]:
    """extract_first_word(..., EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE), repeatedly."""
    out: list[str] = []
    i = 0
    while True:
        while i < len(value) and value[i] in " \t\n\r":
            i += 1
        if i >= len(value):
            return out
        word = ""
        quote = ""
        while i < len(value):
            char = value[i]
            if quote:
                if char == "\\":
                    text, i = _unescape(value, i + 1)
                    word += text
                    continue
                if char == quote:
                    quote = ""
                else:
                    word += char
                i += 1
                continue
            if char in " \t\n\r":
                break
            if char == "\\":
                text, i = _unescape(value, i + 1)
                word += text
                continue
            if char in "\"'":
                quote = char
            else:
                word += char
            i += 1
        if quote:
            raise SystemdSyntaxError("unbalanced quotes")
        out.append(word)


def specifiers(word: str) -> str:
    out = ""
    i = 0
    while i < len(word):
        if word[i] != "%":
            out += word[i]
            i += 1
            continue
        spec = word[i + 1 : i + 2]
        if spec == "%":
            out += "%"
        elif spec in _SPECIFIERS and spec:
            out += f"<%{spec}>"
        else:
            raise SystemdSyntaxError(f"unknown specifier %{spec}")
        i += 2
    return out


def _variables(word: str) -> str:
    out = ""
    i = 0
    while i < len(word):
        if word[i] != "$":
            out += word[i]
            i += 1
            continue
        rest = word[i + 1 :]
        if rest.startswith("$"):
            out += "$"
            i += 2
        elif rest.startswith("{") and "}" in rest:
            name = rest[1 : rest.index("}")]
            out += f"<${name}>"
            i += 2 + len(name) + 1
        elif found := _NAME.match(rest):
            out += f"<${found[0]}>"
            i += 1 + len(found[0])
        else:
            out += "$"
            i += 1
    return out


def exec_argv(value: str) -> list[str]:
    argv = words(value)
    if ";" in argv:
        raise SystemdSyntaxError("a lone ; separates commands")
    return [_variables(specifiers(word)) for word in argv]


def environment(value: str) -> dict[str, str]:
    out = {}
    for word in words(value):
        name, sep, val = specifiers(word).partition("=")
        if not sep or not _NAME.fullmatch(name):
            raise SystemdSyntaxError(f"invalid assignment {word!r}")
        out[name] = val
    return out


def env_file(text: str) -> dict[str, str]:
    """systemd's parse_env_file_internal: KEY=VALUE lines, '…' literal, "…" with \\ " ` $ escapes."""
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i >= len(text):
            break
        if text[i] in "#;":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        start = i
        while i < len(text) and text[i] not in "=\n":
            i += 1
        key = text[start:i].strip()
        if i >= len(text) or text[i] != "=":
            raise SystemdSyntaxError(f"no = after {key!r}")
        i += 1
        while i < len(text) and text[i] in " \t":
            i += 1
        value = ""
        trailing = 0  # unquoted trailing whitespace is dropped
        while i < len(text) and text[i] != "\n":
            char = text[i]
            if char == "'":
                end = text.find("'", i + 1)
                if end < 0:
                    raise SystemdSyntaxError("unbalanced '")
                value += text[i + 1 : end]
                i, trailing = end + 1, 0
            elif char == '"':
                i += 1
                while i < len(text) and text[i] != '"':
                    if text[i] == "\\" and i + 1 < len(text):
                        nxt = text[i + 1]
                        value += nxt if nxt in '"\\`$' else ("" if nxt == "\n" else "\\" + nxt)
                        i += 2
                    else:
                        value += text[i]
                        i += 1
                if i >= len(text):
                    raise SystemdSyntaxError('unbalanced "')
                i, trailing = i + 1, 0
            elif char == "\\" and i + 1 < len(text):
                value += "" if text[i + 1] == "\n" else text[i + 1]
                i, trailing = i + 2, 0
            else:
                value += char
                trailing = trailing + 1 if char in " \t" else 0
                i += 1
        out[key] = value[: len(value) - trailing] if trailing else value
    return out
