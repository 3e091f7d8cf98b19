"""Checks that run before any weights byte moves: free disk space and the owner of the result.

+ ``required_bytes(remaining)``: the bytes still to fetch plus a reserve so the filesystem never fills up.
+ ``check_disk(path, remaining)``: refuses with a ``DiskSpaceError`` naming free, needed and what to do.
+ ``check_owner(owner)``: the service user exists and this process may give files to it.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ms4fleet.weights.errors import DiskSpaceError, WeightsError

RESERVE_FRACTION = 0.05
RESERVE_MIN = 256 * 1024**2


class _Usage(Protocol):
    @property
    def free(self) -> int: ...


DiskUsage = Callable[[Path], _Usage]


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"


def required_bytes(remaining: int) -> int:
    if remaining <= 0:
        return 0
    return remaining + max(int(remaining * RESERVE_FRACTION), RESERVE_MIN)


def existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_disk(path: Path, remaining: int, disk_usage: DiskUsage = shutil.disk_usage) -> None:
    need = required_bytes(remaining)
    if need == 0:
        return
    where = existing_ancestor(path)
    free = disk_usage(where).free
    if free < need:
        raise DiskSpaceError(
            f"{path}: not enough disk space: {_gib(free)} free on {where}, {_gib(need)} needed "
            f"({_gib(remaining)} still to fetch + reserve); free space or set weights.dir on a larger filesystem"
        )


def check_owner(owner: str | None) -> None:
    if owner is None:
        return
    user = owner.partition(":")[0]
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise WeightsError(f"owner {user!r} does not exist on this machine: create the service user first") from None
    if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
        raise WeightsError(f"owner {user!r}: only root can give files to another user; run as root or as {user}")
