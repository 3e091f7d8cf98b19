"""Releases: the serving config a host runs (runtime image, vLLM argv, weights revision, unit text), named by
a hash of its content, and the host's record of the release it runs now and the one before it.

+ ``release_for(config, plan)``: the release the core's plan describes.
+ ``ReleaseRecord``: ``{"current": ..., "previous": ...}`` kept on the host at ``RELEASE_FILE``;
  ``advance(new)`` after a verified switch, and the previous release's unit texts are what rollback restores.

The id hashes only what changes serving (not the creation time), so planning the same config twice gives
the same id and a second rollout of it is a no-op.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ms4fleet import paths
from ms4fleet.config import HostConfig
from ms4fleet.hostplan import HostPlan
from ms4fleet.serving import ServingPlan

RELEASE_FILE = f"{paths.RELEASES_DIR}/releases.json"
# A release's unit files wait here (one directory per release id) until the switch installs them.
STAGED_DIR = f"{paths.RELEASES_DIR}/staged"
FORMAT = 1
ID_CHARS = 16


class ReleaseError(ValueError):
    """A release record on a host that cannot be read: names the host and what to do."""


@dataclass(frozen=True)
class Release:
    """One serving configuration of a host. ``units`` maps unit name -> exact unit file text."""

    runtime: str
    image: str | None
    argv: tuple[tuple[str, ...], ...]
    weights_revision: str | None
    units: Mapping[str, str]
    created: str = field(default="", compare=False)
    # The host's whole desired state (HostPlan JSON, file bytes as sha256, no secret value) this release was
    # planned with: what the next rollout classifies its change against. Not part of the id.
    plan: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def unit_hash(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.units):
            digest.update(name.encode() + b"\0" + self.units[name].encode() + b"\0")
        return digest.hexdigest()

    @property
    def id(self) -> str:
        content = {
            "runtime": self.runtime,
            "image": self.image,
            "argv": [list(a) for a in self.argv],
            "weights_revision": self.weights_revision,
            "unit_hash": self.unit_hash,
        }
        blob = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:ID_CHARS]

    def summary(self) -> str:
        """``3f2a9c0d1e2b4a5c (image vllm/vllm-openai:v0.32.0, weights 3f1b2c4d5e6f, 4 replica(s))``."""
        what = f"image {self.image}" if self.image else self.runtime
        weights = f", weights {self.weights_revision[:12]}" if self.weights_revision else ""
        return f"{self.id} ({what}{weights}, {len(self.units)} replica(s))"

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "runtime": self.runtime,
            "image": self.image,
            "argv": [list(a) for a in self.argv],
            "weights_revision": self.weights_revision,
            "unit_hash": self.unit_hash,
            "units": dict(sorted(self.units.items())),
            "created": self.created,
        }
        if self.plan is not None:
            out["plan"] = dict(self.plan)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Release:
        release = cls(
            runtime=str(data["runtime"]),
            image=None if data.get("image") is None else str(data["image"]),
            argv=tuple(tuple(str(word) for word in argv) for argv in data["argv"]),
            weights_revision=None if data.get("weights_revision") is None else str(data["weights_revision"]),
            units={str(k): str(v) for k, v in dict(data["units"]).items()},
            created=str(data.get("created", "")),
            plan=dict(data["plan"]) if isinstance(data.get("plan"), Mapping) else None,
        )
        if "id" in data and data["id"] != release.id:
            raise ValueError(f"id {data['id']} does not match its content ({release.id}): the record was edited")
        return release


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def release_for(
    config: HostConfig, plan: ServingPlan, created: str | None = None, host_plan: HostPlan | None = None
) -> Release:
    """``host_plan``: the host's whole plan, recorded with the release for the next rollout to classify."""
    runtime = config.runtime
    return Release(
        runtime=f"docker {plan.image}" if plan.image else f"native {runtime.venv} vllm=={runtime.vllm_version}",
        image=plan.image,
        argv=tuple(r.argv for r in plan.replicas),
        weights_revision=config.weights.revision if config.weights else None,
        units={r.unit_name: r.unit_text for r in plan.replicas},
        created=created or now_iso(),
        plan=None if host_plan is None else host_plan.to_json(contents={}),
    )


@dataclass(frozen=True)
class ReleaseRecord:
    """What a host runs (``current``) and what it ran before (``previous``, the rollback target)."""

    current: Release | None = None
    previous: Release | None = None

    def advance(self, new: Release) -> ReleaseRecord:
        """The record after ``new`` was verified on the host; the same release again changes nothing (the
        same serving release with a changed plan, a change that restarted no replica, replaces ``current``)."""
        if self.current is not None and self.current.id == new.id:
            return self if self.current.plan == new.plan else ReleaseRecord(current=new, previous=self.previous)
        return ReleaseRecord(current=new, previous=self.current)

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "current": None if self.current is None else self.current.to_dict(),
            "previous": None if self.previous is None else self.previous.to_dict(),
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def parse(cls, host: str, text: str) -> ReleaseRecord:
        """The record read from ``host`` (empty text: none yet); ``ReleaseError`` names what is wrong."""
        if not text.strip():
            return cls()
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format') if isinstance(data, dict) else '?'}, not {FORMAT}")
            return cls(
                current=None if data.get("current") is None else Release.from_dict(data["current"]),
                previous=None if data.get("previous") is None else Release.from_dict(data["previous"]),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise ReleaseError(
                f"{host}: {RELEASE_FILE} is unreadable ({err}): move it aside and run the rollout again"
            ) from None
