"""Releases: content-addressed ids from the core's plan, the host record, advance and rollback target."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ms4fleet.config import HostConfig
from ms4fleet.rollout.release import RELEASE_FILE, Release, ReleaseError, ReleaseRecord, release_for
from ms4fleet.serving import plan_host

REV_A = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
REV_B = "4a1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"


def config(revision: str = REV_A, **sections: Any) -> HostConfig:
    data: dict[str, Any] = {
        "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
        "ms4fleet_weights": {"revision": revision, "hf_token": {"env": "HF_TOKEN"}},
    }
    data.update({f"ms4fleet_{k}": v for k, v in sections.items()})
    return HostConfig.from_host_data("gpu-1", data)


def release(cfg: HostConfig, created: str = "2026-11-29T10:00:00Z") -> Release:
    return release_for(cfg, plan_host(cfg), created=created)


def test_release_holds_what_serving_runs() -> None:
    cfg = config()
    rel = release(cfg)
    plan = plan_host(cfg)
    assert rel.image == "vllm/vllm-openai:v0.32.0"
    assert rel.weights_revision == REV_A
    assert rel.argv == tuple(r.argv for r in plan.replicas)
    assert dict(rel.units) == {r.unit_name: r.unit_text for r in plan.replicas}
    assert len(rel.id) == 16
    assert RELEASE_FILE == "/var/lib/ms4fleet/releases/releases.json"


def test_id_depends_on_content_not_on_time_or_host_name() -> None:
    a = release(config(), created="2026-01-01T00:00:00Z")
    b = release(config(), created="2026-11-29T00:00:00Z")
    assert a.id == b.id and a == b
    assert release(config(REV_B)).id != a.id
    assert release(config(serving={"max_num_seqs": 32})).id != a.id
    assert release(config(runtime={"image": "vllm/vllm-openai:v0.21.0"})).id != a.id
    native = release(config(runtime={"kind": "native"}))
    assert native.image is None and native.runtime.startswith("native /opt/ms4fleet/vllm")
    assert native.id != a.id


def test_record_advance_keeps_the_previous_release_for_rollback() -> None:
    a, b = release(config()), release(config(REV_B))
    record = ReleaseRecord().advance(a)
    assert (record.current, record.previous) == (a, None)
    record = record.advance(b)
    assert (record.current, record.previous) == (b, a)
    # The same release again is a no-op: previous is not overwritten with current.
    assert record.advance(release(config(REV_B), created="2030-01-01T00:00:00Z")) is record


def test_record_round_trips_through_json() -> None:
    a, b = release(config()), release(config(REV_B))
    record = ReleaseRecord(current=b, previous=a)
    text = record.to_json()
    data = json.loads(text)
    assert data["current"]["id"] == b.id and data["previous"]["id"] == a.id
    assert data["current"]["units"] == dict(sorted(b.units.items()))
    again = ReleaseRecord.parse("gpu-1", text)
    assert again == record and again.previous is not None and again.previous.created == a.created
    assert ReleaseRecord.parse("gpu-1", "") == ReleaseRecord()


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"format": 2}',
        "[]",
        '{"format": 1, "current": {"runtime": "x"}}',
    ],
)
def test_unreadable_record_names_host_and_file(text: str) -> None:
    with pytest.raises(ReleaseError) as err:
        ReleaseRecord.parse("gpu-7", text)
    assert str(err.value).startswith(f"gpu-7: {RELEASE_FILE} is unreadable")


def test_edited_record_is_refused() -> None:
    data = json.loads(ReleaseRecord(current=release(config())).to_json())
    data["current"]["argv"][0].append("--enforce-eager")
    with pytest.raises(ReleaseError, match="does not match its content"):
        ReleaseRecord.parse("gpu-1", json.dumps(data))


def test_summary() -> None:
    rel = release(config())
    assert rel.summary() == f"{rel.id} (image vllm/vllm-openai:v0.32.0, weights {REV_A[:12]}, 4 replica(s))"
