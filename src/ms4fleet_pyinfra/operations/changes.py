"""Asking whether earlier operations changed anything, in both phases: at prepare (``--dry``) an operation
only says it *will* change; at execution it says whether it *did*."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pyinfra.api.operation import OperationMeta


def changed(meta: OperationMeta) -> bool:
    return meta.did_change() if meta.is_complete() else meta.will_change


def any_changed(metas: Iterable[OperationMeta]) -> Callable[[], bool]:
    """A callable for ``_if=`` and for operations that act only after a change upstream."""
    frozen = tuple(metas)
    return lambda: any(changed(meta) for meta in frozen)
