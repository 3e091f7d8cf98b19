"""Wave planning: canary first, waves in inventory order, max-unavailable batches, and the edge cases."""

from __future__ import annotations

import pytest

from ms4fleet.rollout.waves import (
    CapacityError,
    Policy,
    PolicyError,
    WaveSize,
    check_capacity,
    plan_waves,
    serving_floor,
)

FLEET = [f"gpu-{i}" for i in range(1, 9)]


def waves(plan: object) -> list[tuple[str, list[list[str]]]]:
    return [(w.kind, [list(b) for b in w.batches]) for w in plan.waves]  # type: ignore[attr-defined]


def test_canary_then_quarter_waves_in_inventory_order() -> None:
    plan = plan_waves(FLEET, set(FLEET), Policy(canary=1, wave=WaveSize.parse("25%"), max_unavailable=2))
    assert waves(plan) == [
        ("canary", [["gpu-1"]]),
        ("wave", [["gpu-2", "gpu-3"]]),
        ("wave", [["gpu-4", "gpu-5"]]),
        ("wave", [["gpu-6", "gpu-7"]]),
        ("wave", [["gpu-8"]]),
    ]
    assert plan.hosts == tuple(FLEET)


def test_max_unavailable_splits_a_wave_into_batches() -> None:
    plan = plan_waves(FLEET, set(FLEET), Policy(canary=2, wave=WaveSize.parse("6"), max_unavailable=4))
    assert waves(plan) == [
        ("canary", [["gpu-1", "gpu-2"]]),
        ("wave", [["gpu-3", "gpu-4", "gpu-5", "gpu-6"], ["gpu-7", "gpu-8"]]),
    ]
    one = plan_waves(FLEET[:4], set(FLEET[:4]), Policy(canary=1, wave=WaveSize.parse("100%"), max_unavailable=1))
    assert waves(one) == [("canary", [["gpu-1"]]), ("wave", [["gpu-2"], ["gpu-3"], ["gpu-4"]])]


def test_inventory_order_not_the_order_of_the_changing_set() -> None:
    changing = ["gpu-7", "gpu-3", "gpu-5"]
    plan = plan_waves(FLEET, changing, Policy(canary=1, wave=WaveSize.parse("1")))
    assert [w.hosts for w in plan.waves] == [("gpu-3",), ("gpu-5",), ("gpu-7",)]
    assert plan.unchanged == ("gpu-1", "gpu-2", "gpu-4", "gpu-6", "gpu-8")


def test_second_rollout_of_the_same_release_plans_zero_waves() -> None:
    plan = plan_waves(FLEET, set(), Policy())
    assert plan.waves == ()
    assert plan.unchanged == tuple(FLEET)


def test_no_canary() -> None:
    plan = plan_waves(FLEET[:3], set(FLEET[:3]), Policy(canary=0, wave=WaveSize.parse("2")))
    assert waves(plan) == [("wave", [["gpu-1"], ["gpu-2"]]), ("wave", [["gpu-3"]])]


def test_canary_covering_every_changing_host_leaves_no_wave() -> None:
    plan = plan_waves(FLEET[:4], {"gpu-2"}, Policy(canary=3))
    assert waves(plan) == [("canary", [["gpu-2"]])]


def test_percentage_rounds_up_and_never_to_zero() -> None:
    assert WaveSize.parse("25%").hosts(3) == 1
    assert WaveSize.parse("1%").hosts(8) == 1
    assert WaveSize.parse("30%").hosts(8) == 3
    assert WaveSize.parse("100%").hosts(8) == 8
    assert WaveSize.parse("3").hosts(2) == 3


@pytest.mark.parametrize(
    ("policy", "size", "message"),
    [
        (Policy(canary=5), 4, "--canary 5: more than the fleet's 4 host(s); use at most 4"),
        (Policy(canary=-1), 4, "--canary -1"),
        (Policy(max_unavailable=0), 4, "--max-unavailable 0: at least 1 host"),
        (Policy(max_unavailable=4), 4, "would take all 4 hosts out of the load balancer at once; use at most 3"),
        (Policy(max_unavailable=9), 4, "use at most 3"),
    ],
)
def test_bad_policy_is_refused_with_the_option_named(policy: Policy, size: int, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        plan_waves(FLEET[:size], set(FLEET[:size]), policy)
    assert message in str(err.value)


@pytest.mark.parametrize("text", ["0", "0%", "101%", "-1", "two", "1.5", "", "%"])
def test_bad_wave_size(text: str) -> None:
    with pytest.raises(PolicyError, match="--wave"):
        WaveSize.parse(text)


def test_single_host_fleet_is_allowed_with_a_warning() -> None:
    plan = plan_waves(["gpu-1"], {"gpu-1"}, Policy(canary=1, max_unavailable=1))
    assert waves(plan) == [("canary", [["gpu-1"]])]
    assert "stops serving" in plan.warnings[0]


def test_unknown_or_duplicate_hosts() -> None:
    with pytest.raises(PolicyError, match="not in the inventory"):
        plan_waves(FLEET, {"gpu-99"}, Policy())
    with pytest.raises(PolicyError, match="twice"):
        plan_waves(["a", "a"], set(), Policy())
    with pytest.raises(PolicyError, match="no hosts"):
        plan_waves([], set(), Policy())


FOUR = ["gpu-1", "gpu-2", "gpu-3", "gpu-4"]


def test_three_of_four_already_drained_is_refused_with_one_line_by_default() -> None:
    down = {"gpu-1", "gpu-2", "gpu-3"}
    plan = plan_waves(FOUR, set(FOUR), Policy(), unavailable=down)
    with pytest.raises(CapacityError) as err:
        check_capacity(FOUR, down, plan)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("--max-unavailable 1: 3 of 4 hosts (gpu-1, gpu-2, gpu-3) are already out")
    assert "1 serve(s) where 3 must keep serving" in message and "--max-unavailable 3" in message


def test_hosts_out_of_service_change_first_and_a_wide_enough_policy_passes() -> None:
    down = {"gpu-2", "gpu-3"}
    plan = plan_waves(FOUR, set(FOUR), Policy(canary=1, wave=WaveSize.parse("1"), max_unavailable=2), down)
    assert [w.hosts for w in plan.waves] == [("gpu-2",), ("gpu-3",), ("gpu-1",), ("gpu-4",)]
    check_capacity(FOUR, down, plan)


def test_the_last_serving_host_is_never_drained() -> None:
    # max-unavailable 3 on 4 hosts: the floor is 1, and a batch holding the only serving host is refused.
    policy = Policy(canary=0, wave=WaveSize.parse("100%"), max_unavailable=3)
    down = {"gpu-1", "gpu-2", "gpu-3"}
    plan = plan_waves(FOUR, {"gpu-4"}, policy, unavailable=down)
    with pytest.raises(CapacityError, match="switching gpu-4 would leave 0 of 4 hosts serving, below 1"):
        check_capacity(FOUR, down, plan)
    # The same with the drained hosts switched first (and back) keeps one serving at every step.
    whole = plan_waves(FOUR, set(FOUR), policy, unavailable=down)
    assert [list(b) for w in whole.waves for b in w.batches] == [["gpu-1", "gpu-2", "gpu-3"], ["gpu-4"]]
    check_capacity(FOUR, down, whole)


def test_a_batch_that_mixes_down_and_serving_hosts_counts_both() -> None:
    # gpu-1 is down; a batch of gpu-2 and gpu-3 would leave only gpu-4 (and gpu-1 back) ... counted per batch.
    policy = Policy(canary=0, wave=WaveSize.parse("2"), max_unavailable=2)
    plan = plan_waves(FOUR, {"gpu-2", "gpu-3"}, policy, unavailable={"gpu-1"})
    with pytest.raises(CapacityError, match="switching gpu-2, gpu-3 would leave 1 of 4 hosts serving, below 2"):
        check_capacity(FOUR, {"gpu-1"}, plan)


def test_a_fleet_where_nothing_serves_may_go_wide() -> None:
    plan = plan_waves(FOUR, set(FOUR), Policy(canary=0, wave=WaveSize.parse("100%"), max_unavailable=3), set(FOUR))
    check_capacity(FOUR, set(FOUR), plan)
    assert serving_floor(4, Policy()) == 3 and serving_floor(2, Policy(max_unavailable=1)) == 1
    # A one-host fleet is allowed (with check_policy's warning): it stops serving while it switches.
    assert serving_floor(1, Policy()) == 0
    check_capacity(["solo"], set(), plan_waves(["solo"], {"solo"}, Policy()))
