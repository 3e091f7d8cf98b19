"""The change classifier over pairs of HostPlans: what each kind of inventory edit does to a serving host."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ms4fleet.config import HostConfig
from ms4fleet.hostplan import HostPlan, host_plan
from ms4fleet.rollout import changes
from ms4fleet.rollout.changes import Change, classify

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
         "Docker daemon.json"),
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


def test_an_unknown_part_counts_as_a_restart_not_as_nothing() -> None:
    old, new = plan().to_json(), plan().to_json()
    new["something_new"] = 1
    assert classify(old, new).change is Change.REPLICA_RESTART
