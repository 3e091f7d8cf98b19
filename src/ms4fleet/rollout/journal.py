"""Durable rollouts on the controller: one lock per fleet, and a journal of every step.

+ ``fleet_dir(hosts)``: ``$MS4FLEET_STATE_DIR`` (default ``$XDG_STATE_HOME/ms4fleet``, else
  ``~/.local/state/ms4fleet``) ``/rollouts/<fleet id>``; the id hashes the sorted host names, so every
  inventory file naming the same hosts shares one lock and one journal.
+ ``FleetLock(directory).acquire()``: an exclusive ``flock`` held for the rollout's life (the kernel drops
  it when the process dies, SIGKILL included); a second rollout gets ``LockedError``, one line naming the
  holder (user, host, pid, start time).
+ ``Journal(path).write(event, **fields)``: one JSON line per step, flushed and fsynced before the step's
  effect is relied on. Fields are rollout facts (hosts, phases, release ids, step results); the driver never
  passes a secret, and the file is 0600 in a 0700 directory.
+ ``runs(events)``: the journal split into runs; ``unfinished(events)``: the last run, if it never ended.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ms4fleet.rollout.release import now_iso
from ms4fleet.statedir import state_dir

JOURNAL_NAME = "journal.jsonl"
LOCK_NAME = "lock"
# Events that close a run: anything else after a "start" means the controller died mid-rollout.
ENDS = frozenset({"end", "interrupted"})


class LockedError(RuntimeError):
    """Another rollout of the same fleet holds the lock; the message names it."""


def fleet_id(hosts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(hosts)).encode()).hexdigest()[:16]


def fleet_dir(hosts: Iterable[str]) -> Path:
    return state_dir() / "rollouts" / fleet_id(hosts)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


@dataclass
class FleetLock:
    directory: Path
    _file: IO[str] | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return self.directory / LOCK_NAME

    def acquire(self) -> None:
        _private_dir(self.directory)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the rollout's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _holder(handle.read())
            handle.close()
            raise LockedError(
                f"another rollout of this fleet is running ({holder}; lock {self.path}): wait for it to end"
            ) from None
        handle.seek(0)
        handle.truncate()
        info = {"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(), "started": now_iso()}
        handle.write(json.dumps(info) + "\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"user {info['user']} on {info['host']}, pid {info['pid']}, since {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


@dataclass
class Journal:
    path: Path

    def write(self, event: str, **fields: Any) -> None:
        _private_dir(self.path.parent)
        line = json.dumps({"event": event, "at": now_iso(), **fields}, sort_keys=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        events = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                # A line cut short by a controller killed mid-write: every line before it stands.
                continue
        return events


def runs(events: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """The journal's runs, oldest first: each from its ``start`` event to the next ``start``."""
    out: list[list[Mapping[str, Any]]] = []
    for event in events:
        if event.get("event") == "start" or not out:
            out.append([])
        out[-1].append(event)
    return out


def unfinished(events: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """The runs of the last rollout that never completed: the last run and the runs it resumed, when it has
    no ``end`` (killed, interrupted, or a run that stopped)."""
    all_runs = runs(events)
    if not all_runs or any(e.get("event") == "end" and e.get("outcome") in {"complete", "no-op"} for e in all_runs[-1]):
        return []
    chain = [all_runs[-1]]
    for run in reversed(all_runs[:-1]):
        if not chain[0][0].get("resume"):
            break
        chain.insert(0, run)
    return chain


def summary(run: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One earlier run for the report: when it started, how it ended, each host's phases in it."""
    start = run[0]
    ends = [e for e in run if e.get("event") in ENDS]
    end = ends[-1] if ends else None
    hosts: dict[str, list[dict[str, Any]]] = {}
    for event in run:
        if event.get("event") == "phase":
            hosts.setdefault(str(event["host"]), []).append(
                {"phase": event["phase"], "t": event.get("t"), "detail": event.get("detail", "")}
            )
    ended = "controller died (no end in the journal)" if end is None else str(end.get("outcome", end["event"]))
    return {
        "started_at": start.get("at"),
        "resume": bool(start.get("resume")),
        "ended": ended,
        "stopped": "" if end is None else str(end.get("stopped", "")),
        "hosts": hosts,
    }
