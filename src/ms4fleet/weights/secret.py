"""The Hub token, handled by reference: read from a file or an environment variable, kept in memory only.

+ ``TokenRef(file=...)`` / ``TokenRef(env=...)``: where the token lives; safe to log.
+ ``read_token(ref)`` -> ``Secret``: reads it, refusing a file that group or others can read.
+ ``scrubbed(secret)``: a context manager that masks the token in every log record emitted meanwhile.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ms4fleet.weights.errors import WeightsError

MASK = "***"


@dataclass(frozen=True)
class TokenRef:
    """Exactly one of ``file`` (a path) or ``env`` (a variable name)."""

    file: str | None = None
    env: str | None = None

    def __post_init__(self) -> None:
        if (self.file is None) == (self.env is None):
            raise WeightsError("token: name exactly one of a file or an environment variable")

    def __str__(self) -> str:
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, MASK) if self._value else text

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    __str__ = __repr__


def read_token(ref: TokenRef) -> Secret:
    """Read the token ``ref`` names; one-line ``WeightsError`` when absent, empty, unreadable or exposed."""
    if ref.env is not None:
        value = os.environ.get(ref.env, "")
        if not value.strip():
            raise WeightsError(f"token: environment variable {ref.env} is unset or empty: export the READ token")
        return Secret(value.strip())
    path = Path(ref.file or "")
    try:
        st = path.stat()
    except FileNotFoundError:
        raise WeightsError(f"token: file {path} does not exist: write the READ token there (mode 0600)") from None
    except OSError as err:
        raise WeightsError(f"token: file {path} cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise WeightsError(f"token: {path} is not a regular file")
    if st.st_mode & 0o077:
        raise WeightsError(
            f"token: file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}"
        )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise WeightsError(f"token: file {path} cannot be read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise WeightsError(f"token: file {path} is not UTF-8 text") from None
    if not value or len(value.split()) != 1:
        raise WeightsError(f"token: file {path} must hold exactly one token on one line")
    return Secret(value)


class _ScrubFilter(logging.Filter):
    """Rewrites a record in place so no handler ever sees the token."""

    def __init__(self, secret: Secret) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secret.reveal() in record.getMessage():
            record.msg = self._secret.scrub(record.getMessage())
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if self._secret.reveal() in text:
                record.exc_text = self._secret.scrub(text)
        return True


def _all_handlers() -> list[logging.Handler]:
    handlers = list(logging.getLogger().handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    return handlers


@contextmanager
def scrubbed(secret: Secret | None) -> Iterator[None]:
    """Mask ``secret`` in every record reaching any handler configured now (root and named loggers)."""
    if secret is None:
        yield
        return
    scrub = _ScrubFilter(secret)
    handlers = _all_handlers()
    for handler in handlers:
        handler.addFilter(scrub)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(scrub)
