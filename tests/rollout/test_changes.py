"""The change classifier over pairs of HostPlans: what each kind of inventory edit does to a serving host."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from ms4fleet.config import HostConfig
from ms4fleet.hostplan import HostPlan, host_plan
from ms4fleet.rollout import changes
from ms4fleet.rollout.changes import Change, classify, deploy_change, host_change, untrusted
from ms4fleet.rollout.release import Release, ReleaseRecord, release_for

REVISION = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
_SECTIONS: dict[str, Any] = {
    "gpu": {"kind": "h200-sxm", "count": 8},
    "serving": {"api_key": {"env": "TEST_VLLM_KEY"}},
    "weights": {"revision": REVISION, "hf_token": {"env": "TEST_HF_TOKEN"}},
}


def plan(**sections: dict[str, Any]) -> HostPlan:
    data: dict[str, Any] = {f"ms4fleet_{name}": value for name, value in _SECTIONS.items()}
    data.update({f"ms4fleet_{name}": value for name, value in sections.items()})
    return host_plan(HostConfig.from_host_data("gpu-1", data))


@pytest.mark.parametrize(
    ("edit", "expected", "reason"),
    [
        ({"serving": {"max_num_seqs": 32, "api_key": {"env": "TEST_VLLM_KEY"}}}, Change.REPLICA_RESTART, "replicas"),
        ({"serving": {"env": {"NCCL_DEBUG": "INFO"}, "api_key": {"env": "TEST_VLLM_KEY"}}}, Change.REPLICA_RESTART,
         "replicas"),
        ({"runtime": {"image": "vllm/vllm-openai:v0.31.0"}}, Change.REPLICA_RESTART, "image"),
        ({"weights": {"revision": "0" * 40, "hf_token": {"env": "TEST_HF_TOKEN"}}}, Change.REPLICA_RESTART,
         "weights revision"),
        ({"serving": {"api_key": {"env": "OTHER_KEY_VAR"}}}, Change.REPLICA_RESTART, "secrets"),
        ({"provision": {"docker_daemon_options": {"log-driver": "journald"}}}, Change.DOCKER_RESTART,
         "Docker daemon.json log-driver"),
        # Keys dockerd reloads on SIGHUP: applied in place, nothing drained or restarted.
        ({"provision": {"docker_daemon_options": {"debug": True, "labels": ["rack=a"]}}}, Change.LIVE,
         "Docker daemon.json debug, labels: dockerd reloads it"),
        ({"provision": {"docker_daemon_options": {"debug": True, "log-level": "warn"}}}, Change.DOCKER_RESTART,
         "Docker daemon.json debug, log-level"),
        ({"provision": {"driver_version": "580.82.07"}}, Change.REBOOT, "packages driver"),
        ({"provision": {"driver_branch": 590, "driver_version": "590.44.01"}}, Change.REBOOT, "packages driver"),
        ({"provision": {"reboot": "never"}}, Change.LIVE, "reboot"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v),
)  # fmt: skip
def test_each_edit_is_classified(edit: dict[str, Any], expected: Change, reason: str) -> None:
    result = classify(plan(), plan(**edit))
    assert result.change is expected, result.reasons
    assert any(r.startswith(reason) for r in result.reasons), result.reasons
    assert result.change.disruptive == (expected >= Change.REPLICA_RESTART)
    # JSON read back (a plan recorded on the host) classifies the same.
    assert classify(plan().to_json(), plan(**edit).to_json()) == result


def test_a_daemon_json_change_recorded_without_its_keys_restarts_docker() -> None:
    """A plan recorded before daemon.json's keys were: which keys changed is unknown, so Docker restarts."""
    old = plan().to_json()
    for f in old["merged_files"]:
        del f["keys"]
    result = classify(old, plan(provision={"docker_daemon_options": {"debug": True}}).to_json())
    assert result.change is Change.DOCKER_RESTART and result.provisions
    assert result.reasons == ("Docker daemon.json (docker-restart)",)


def test_a_driver_change_reboots_and_says_why_for_every_part() -> None:
    result = classify(plan(), plan(provision={"driver_version": "580.82.07"}))
    assert result.change is Change.REBOOT
    # The fabric manager is pinned to the driver on an NVSwitch board (8 x H200): it moves with it.
    assert "packages fabric_manager (reboot)" in result.reasons
    assert "packages driver (reboot)" in result.reasons


def test_the_same_plan_is_no_change_and_nothing_installed_is_a_first_install() -> None:
    assert classify(plan(), plan()) == changes.Classified(Change.NONE)
    first = classify(None, plan())
    assert first.change is Change.REBOOT and "first install" in first.reasons[0]
    assert Change.NONE.label == "none" and Change.DOCKER_RESTART.label == "docker-restart"
    assert not Change.LIVE.disruptive and Change.DOCKER_RESTART.disruptive


def test_every_key_of_the_plan_is_classified() -> None:
    keys = set(plan().to_json())
    known = set(changes._PLAIN) | {"packages", "files", "units", "weights", "merged_files"}
    assert keys <= known, f"classify these HostPlan keys in ms4fleet.rollout.changes: {sorted(keys - known)}"
    groups = {g.group for g in plan().packages}
    assert groups <= set(changes._GROUPS)
    assert {f.kind for f in plan().files} <= set(changes._FILE_KINDS)
    # A host planned with its probe has the stack decision too (only then).
    assert "stack" in changes._PLAIN and "stack" not in keys


def test_an_unknown_part_counts_as_a_restart_not_as_nothing() -> None:
    old, new = plan().to_json(), plan().to_json()
    new["something_new"] = 1
    assert classify(old, new).change is Change.REPLICA_RESTART


def recorded(**sections: dict[str, Any]) -> Release:
    """A release as the rollout records it (with its plan), read back from the host's JSON."""
    hp = plan(**sections)
    release = release_for(hp.config, hp.serving, created="2026-12-01T00:00:00Z", host_plan=hp)
    return ReleaseRecord.parse("gpu-1", ReleaseRecord(current=release).to_json()).current or release


def test_releases_carry_their_plan_and_classify_from_the_record() -> None:
    old = recorded()
    assert old.plan is not None and all("content" not in f for f in old.plan["files"])
    assert host_change(old, recorded()).change is Change.NONE
    driver = host_change(old, recorded(provision={"driver_version": "580.82.07"}))
    assert (driver.change, driver.provisions) == (Change.REBOOT, True)
    flags = host_change(old, recorded(serving={"max_num_seqs": 32, "api_key": {"env": "TEST_VLLM_KEY"}}))
    assert (flags.change, flags.provisions) == (Change.REPLICA_RESTART, False)
    live = host_change(old, recorded(provision={"reboot": "never"}))
    assert (live.change, live.provisions) == (Change.LIVE, True)
    # The plan is not part of the serving release's id: a live change keeps the id.
    assert recorded(provision={"reboot": "never"}).id == old.id


def test_a_record_without_a_plan_is_compared_by_its_serving_release_only() -> None:
    hp = plan()
    bare = release_for(hp.config, hp.serving, created="2026-12-01T00:00:00Z")
    assert "plan" not in bare.to_dict()
    assert host_change(bare, recorded()).change is Change.NONE
    other = recorded(serving={"max_num_seqs": 32, "api_key": {"env": "TEST_VLLM_KEY"}})
    assert host_change(bare, other).change is Change.REPLICA_RESTART
    assert host_change(None, other).change is Change.REBOOT


def test_a_live_change_replaces_the_current_record_and_keeps_the_rollback_target() -> None:
    first, second = recorded(), recorded(serving={"max_num_seqs": 32, "api_key": {"env": "TEST_VLLM_KEY"}})
    record = ReleaseRecord().advance(first).advance(second)
    live = recorded(serving={"max_num_seqs": 32, "api_key": {"env": "TEST_VLLM_KEY"}}, provision={"reboot": "never"})
    after = record.advance(live)
    assert after.current is not None and after.current.plan == live.plan and after.previous == first
    assert after.advance(live) is after


def test_a_deploy_drains_and_provisions_a_host_whose_record_it_cannot_trust() -> None:
    old = recorded()
    on_host = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in old.units.items()}
    flags = recorded(serving={"max_num_seqs": 32, "api_key": {"env": "TEST_VLLM_KEY"}})
    # A trusted record: the same classification as a rollout's.
    assert deploy_change(old, recorded(), on_host) == host_change(old, recorded())
    assert deploy_change(old, flags, on_host) == host_change(old, flags)
    assert deploy_change(old, flags).change is Change.REPLICA_RESTART
    # No record, one without its plan, or units changed since by another path: drained once and provisioned.
    hp = plan()
    bare = release_for(hp.config, hp.serving, created="2026-12-01T00:00:00Z")
    edited = {**on_host, next(iter(on_host)): "0" * 64}
    for current, installed, why in (
        (None, None, "no release recorded"),
        (bare, None, "recorded without its plan"),
        (old, edited, "not those of its recorded release"),
        (old, {}, "not those of its recorded release"),
    ):
        found = deploy_change(current, recorded(), installed)
        assert (found.change, found.provisions) == (Change.REBOOT, True), why
        assert why in found.reasons[0]
        # Unless the core's converged check says the host already is what it plans.
        assert deploy_change(current, recorded(), installed, converged=True).change is Change.NONE
    assert untrusted(old, on_host) is None and untrusted(old) is None
