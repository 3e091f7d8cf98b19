"""Escaping for where a value lands: systemd unit lines (ExecStart= words, Environment= assignments),
plus the character test every inventory string passes first.

+ ``unsafe_char("a\\nb")`` -> ``"a newline (U+000A)"``: the first character no destination may hold, or None.
+ ``systemd_word("/var/log/nccl.%h.log")`` -> ``/var/log/nccl.%%h.log``: one ExecStart= word, read back unchanged.
+ ``systemd_env("A", "x y")`` -> ``"A=x y"`` (quoted as needed): one Environment= assignment, read back unchanged.
Shell scripts use ``shlex.quote``; apt's deb822 fields take only values validated single-line and unspaced.
"""

from __future__ import annotations

import unicodedata

# Unicode categories that are invisible or break a line somewhere: control (C0, C1, DEL: NUL, CR, LF,
# NEL ...), format (zero-width joiners, bidi overrides, BOM), line and paragraph separators, surrogates,
# private use and unassigned code points.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
# Characters systemd's unquoting reads specially inside double quotes (C escapes, the quote itself).
_SYSTEMD_SPECIAL = frozenset(" \t\"'\\;")


def unsafe_char(value: str) -> str | None:
    """The first character no unit, env file, apt source, shell or argv may carry, described; else None."""
    for char in value:
        category = unicodedata.category(char)
        if category in _UNSAFE_CATEGORIES:
            name = unicodedata.name(char, "").lower() or {"\n": "newline", "\r": "carriage return"}.get(char, "")
            label = f"a {name} " if name else "a control character "
            return f"{label}(U+{ord(char):04X})"
    return None


def _systemd_text(text: str) -> str:
    # Bare when nothing in it is special to systemd's unquoting, else double-quoted with C escapes.
    if text and not any(c in _SYSTEMD_SPECIAL for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_word(arg: str) -> str:
    """One ExecStart= word: ``%`` specifiers and ``$`` variable expansion escaped, quoted when needed."""
    if unsafe_char(arg) is not None:
        raise ValueError("an ExecStart word holds a control character")
    if arg == ";":
        # A lone ';' separates commands in ExecStart=; no argument ms4fleet passes is one.
        raise ValueError("an ExecStart word may not be a lone ';'")
    return _systemd_text(arg.replace("%", "%%").replace("$", "$$"))


def systemd_env(name: str, value: str) -> str:
    """One Environment= assignment, quoted when needed: ``%`` escaped (systemd expands specifiers there, not ``$``)."""
    if unsafe_char(name) is not None or unsafe_char(value) is not None:
        raise ValueError(f"Environment {name} holds a control character")
    return _systemd_text(f"{name}={value}".replace("%", "%%"))
