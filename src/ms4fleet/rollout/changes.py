"""What a change of a host's desired state does to a serving host, decided from two ``HostPlan``s.

+ ``classify(old, new)``: the plan a host runs now (``None``: nothing installed) against the one wanted,
  each a ``HostPlan`` or its ``to_json()``; returns a ``Classified``: the most disruptive ``Change``, one
  reason per differing part, and whether any part is the host's provisioning (packages, files other than
  the replicas' units, daemon.json, services), which the engine then applies as its deploy does.
+ ``host_change(current, target)``: the same from two ``Release``s (the plan each was recorded with).
+ ``deploy_change(current, target, installed, converged)``: what a plain deploy does to a host that serves:
  as ``host_change``, except where the record cannot be trusted to say what the host runs (``untrusted``:
  none, recorded without its plan, or unit files other than the record's: changed by another path since);
  there the core's converged check decides: converged is no change, anything else is unknown ground, drained
  once, provisioned and switched (the record then written makes the next deploy exact).

Kinds, least to most disruptive: ``none`` (identical), ``live`` (applied with nothing restarted: apt
sources, CUDA, gates, the weights verifier), ``replica-restart`` (units, argv, image, weights revision,
secret references: the replicas restart; a daemon.json change of keys dockerd reloads on SIGHUP only,
``ms4fleet.provision.DOCKER_RELOADABLE``, is ``live``), ``docker-restart`` (any other daemon.json key,
Docker or the container toolkit), ``reboot`` (driver or fabric manager packages, the nouveau blacklist).
The last three take the host out of service, so a rollout drains it first; ``live`` changes never drain.

A part of the plan this module does not know counts as a replica restart (a new key of ``HostPlan`` must
be classified here: tests/rollout/test_changes.py checks every key is).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ms4fleet.hostplan import HostPlan
from ms4fleet.provision import daemon_keys_changed, reloadable
from ms4fleet.rollout.release import Release


class Change(IntEnum):
    NONE = 0
    LIVE = 1
    REPLICA_RESTART = 2
    DOCKER_RESTART = 3
    REBOOT = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @property
    def disruptive(self) -> bool:
        """The host stops serving while the change is applied: drain it from the load balancer first."""
        return self >= Change.REPLICA_RESTART


@dataclass(frozen=True)
class Classified:
    change: Change
    reasons: tuple[str, ...] = ()
    # A part outside the replicas changed: the engine runs its provisioning (packages, files, Docker).
    provisions: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change.label, "reasons": list(self.reasons), "provisions": self.provisions}


# Top-level keys of HostPlan.to_json() and what a difference there means.
_PLAIN: dict[str, Change] = {
    "schema": Change.NONE,
    "host": Change.NONE,
    "digest": Change.NONE,
    "notes": Change.NONE,
    # What the host had and the decision for it (ms4fleet.adopt): what it changes shows in packages and files.
    "stack": Change.NONE,
    # Derived from the replicas and the config; whatever changed it shows in the replicas' argv and units.
    "serving": Change.NONE,
    "held": Change.NONE,
    # The OS is read from the host; the packages and files it selects are classified on their own.
    "os": Change.NONE,
    "apt": Change.LIVE,
    "gates": Change.LIVE,
    "reboot": Change.LIVE,
    "runtime": Change.REPLICA_RESTART,
    "service_user": Change.REPLICA_RESTART,
    "image": Change.REPLICA_RESTART,
    "replicas": Change.REPLICA_RESTART,
    # The env file the replicas read at start; a secret's value is not in the plan (see docs/rollout.md).
    "secrets": Change.REPLICA_RESTART,
    "merged_files": Change.DOCKER_RESTART,
}
_GROUPS = {
    "driver": Change.REBOOT,
    "fabric_manager": Change.REBOOT,
    "docker": Change.DOCKER_RESTART,
    "container_toolkit": Change.DOCKER_RESTART,
    "base": Change.LIVE,
    "cuda": Change.LIVE,
}
_FILE_KINDS = {
    "unit": Change.REPLICA_RESTART,
    "nouveau": Change.REBOOT,
    "repository": Change.LIVE,
    "pin": Change.LIVE,
    "weights-verifier": Change.LIVE,
    # A drop-in of a provisioning unit (nvidia-persistenced's): that daemon restarts, the replicas keep running.
    "unit-dropin": Change.LIVE,
    # The host proxy's config: nginx reloads gracefully, finishing every request it holds.
    "proxy": Change.LIVE,
    # unattended-upgrades reads it at its next run; nothing restarts.
    "unattended-upgrades": Change.LIVE,
    # The GPU health reader and its timer: the timer restarts and reads; the replicas never notice.
    "health-watch": Change.LIVE,
    "other": Change.LIVE,
}
# Weights keys that change what the replicas load; the others only change how the controller fetches.
_WEIGHTS_SERVED = ("source", "repo_id", "revision", "profile", "include", "exclude", "dest", "owner")
_UNIT_ROLES = {"replica": Change.REPLICA_RESTART, "provision": Change.LIVE}
# Top-level keys applied by the engine's provisioning, not by switching the replicas.
_PROVISIONING = frozenset({"apt", "reboot", "service_user", "merged_files"})


def _doc(plan: HostPlan | Mapping[str, Any]) -> Mapping[str, Any]:
    return plan.to_json() if isinstance(plan, HostPlan) else plan


def _by(items: Any, key: str) -> dict[str, Any]:
    return {str(item[key]): item for item in items or []}


def _file_sig(f: Mapping[str, Any]) -> tuple[Any, ...]:
    return (f.get("sha256"), f.get("mode"), f.get("owner"), f.get("group"))


def _merged(before: Any, after: Any) -> list[tuple[Change, str, bool]]:
    """daemon.json: ``live`` where every changed key is one dockerd reloads (the engines then run
    ``systemctl reload docker``), else ``docker-restart``; a plan recorded without per-key digests restarts."""
    old_files, new_files = _by(before, "path"), _by(after, "path")
    out = []
    for path in sorted(set(old_files) | set(new_files)):
        o, n = old_files.get(path) or {}, new_files.get(path) or {}
        if o == n:
            continue
        if "keys" in o and "keys" in n:
            keys = daemon_keys_changed(o["keys"], n["keys"])
            if reloadable(keys):
                named = ", ".join(keys) or "file mode or owner"
                out.append((Change.LIVE, f"Docker daemon.json {named}: dockerd reloads it", True))
                continue
            out.append((Change.DOCKER_RESTART, f"Docker daemon.json {', '.join(keys)}", True))
            continue
        out.append((Change.DOCKER_RESTART, "Docker daemon.json", True))
    return out


def classify(old: HostPlan | Mapping[str, Any] | None, new: HostPlan | Mapping[str, Any]) -> Classified:
    """The change from ``old`` to ``new`` (``old`` None: a first install, which may reboot)."""
    if old is None:
        return Classified(Change.REBOOT, ("nothing installed yet: a first install (it serves nothing yet)",))
    a, b = _doc(old), _doc(new)
    found: list[tuple[Change, str, bool]] = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key), b.get(key)
        if before == after:
            continue
        if key == "packages":
            old_groups, new_groups = _by(before, "group"), _by(after, "group")
            for group in sorted(set(old_groups) | set(new_groups)):
                if old_groups.get(group) != new_groups.get(group):
                    found.append((_GROUPS.get(group, Change.REPLICA_RESTART), f"packages {group}", True))
        elif key == "files":
            old_files, new_files = _by(before, "path"), _by(after, "path")
            for path in sorted(set(old_files) | set(new_files)):
                o, n = old_files.get(path), new_files.get(path)
                if o is None or n is None or _file_sig(o) != _file_sig(n):
                    kind = str((n or o or {}).get("kind", ""))
                    found.append((_FILE_KINDS.get(kind, Change.REPLICA_RESTART), f"file {path}", kind != "unit"))
        elif key == "units":
            old_units, new_units = _by(before, "name"), _by(after, "name")
            for name in sorted(set(old_units) | set(new_units)):
                if old_units.get(name) != new_units.get(name):
                    role = str((new_units.get(name) or old_units.get(name) or {}).get("role", ""))
                    found.append((_UNIT_ROLES.get(role, Change.REPLICA_RESTART), f"unit {name}", role == "provision"))
        elif key == "weights":
            o, n = before or {}, after or {}
            served = [k for k in _WEIGHTS_SERVED if o.get(k) != n.get(k)]
            if served:
                found.append((Change.REPLICA_RESTART, f"weights {', '.join(served)}", False))
            else:
                found.append((Change.LIVE, "weights fetch", False))
        elif key == "merged_files":
            found.extend(_merged(before, after))
        else:
            found.append((_PLAIN.get(key, Change.REPLICA_RESTART), key, key in _PROVISIONING))
    found = [entry for entry in found if entry[0] is not Change.NONE]
    if not found:
        return Classified(Change.NONE)
    worst = max(change for change, _, _ in found)
    reasons = tuple(f"{why} ({change.label})" for change, why, _ in found)
    return Classified(worst, reasons, any(provisions for _, _, provisions in found))


def host_change(current: Release | None, target: Release) -> Classified:
    """The change from the release a host runs to ``target``. A release recorded without its plan (by an
    older ms4fleet) is compared by its serving parts only."""
    if current is None:
        return classify(None, target.plan or {})
    if current.plan is not None and target.plan is not None:
        found = classify(current.plan, target.plan)
        if current.id != target.id and found.change < Change.REPLICA_RESTART:
            # The release id covers the unit bytes, argv, image and weights: replicas restart whatever the plan says.
            return Classified(Change.REPLICA_RESTART, (*found.reasons, "release (replica-restart)"), found.provisions)
        return found
    if current.id == target.id:
        return Classified(Change.NONE)
    return Classified(Change.REPLICA_RESTART, ("release (replica-restart; recorded without a plan)",))


def untrusted(current: Release | None, installed: Mapping[str, str] | None = None) -> str | None:
    """Why a host's release record cannot be trusted to say what it runs (None: it can): no record, one
    recorded without its plan, or ``installed`` (each vLLM unit file's sha256 on the host) other than its units."""
    if current is None:
        return "no release recorded"
    if current.plan is None:
        return "its release was recorded without its plan"
    if installed is not None and dict(installed) != {
        name: hashlib.sha256(text.encode()).hexdigest() for name, text in current.units.items()
    }:
        return "its vLLM units are not those of its recorded release"
    return None


def deploy_change(
    current: Release | None, target: Release, installed: Mapping[str, str] | None = None, converged: bool = False
) -> Classified:
    """The change a plain deploy makes to a serving host (see the module docstring). Where the record cannot be
    trusted, the core's converged check decides: ``converged`` (the host already is what the core plans) is no
    change, anything else is drained once, provisioned and switched."""
    why = untrusted(current, installed)
    if why is None:
        return host_change(current, target)
    if converged:
        return Classified(Change.NONE, (f"{why}, but the host is converged",))
    return Classified(Change.REBOOT, (f"{why}: drained once, provisioned and switched (reboot)",), provisions=True)
