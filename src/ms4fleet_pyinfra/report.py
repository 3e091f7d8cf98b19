"""Per-host messages and failures from inside operations (a ``FunctionCommand`` returning False fails that
host only; an exception would abort every host's run)."""

from __future__ import annotations

from typing import Any

from pyinfra import logger


def say(host: Any, message: str) -> None:
    logger.info(f"{host.print_prefix}{message}")


def fail(state: Any, host: Any, message: str) -> bool:
    logger.error(f"{host.print_prefix}{message}")
    return False
