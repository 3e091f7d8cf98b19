"""The peer staging plan: shape (breadth first, depth ~ log N), limits, and healing around cut hosts."""

from __future__ import annotations

import math

import pytest

from ms4fleet.weights.tree import SOURCE, Limits, StagePlan, plan_tree, replan


def hosts(n: int) -> list[str]:
    return [f"h{i:03d}" for i in range(n)]


def assert_tree(plan: StagePlan, limits: Limits) -> None:
    """Every receiving host reaches the source or a holder without a cycle; no feeder over its limit."""
    for host in plan.parents:
        seen = {host}
        at = host
        while at in plan.parents:
            at = plan.parents[at]
            assert at not in seen, f"cycle through {at}"
            seen.add(at)
        assert at == SOURCE or at in plan.holders
        assert not set(seen) & set(plan.cut)
    for feeder in {*plan.parents.values()}:
        assert len(plan.children(feeder)) <= limits.room(feeder), feeder


@pytest.mark.parametrize("n", [1, 2, 7, 8, 100, 1000])
@pytest.mark.parametrize("fanout", [1, 2, 3, 8])
def test_depth_grows_with_log_n(n: int, fanout: int) -> None:
    limits = Limits(fanout=fanout, seeds=1)
    plan = plan_tree(hosts(n), [], limits)
    assert_tree(plan, limits)
    assert set(plan.parents) == set(hosts(n))
    assert plan.source_links() == 1
    # A full fanout-ary tree below one seed: 1 + ceil(log_f(n)) links at most.
    bound = n if fanout == 1 else 1 + math.ceil(math.log(max(n, 2), fanout))
    assert plan.max_depth <= bound
    if fanout == 2 and n == 100:
        assert plan.max_depth == 7


def test_seeds_limit_what_the_source_sends() -> None:
    limits = Limits(fanout=2, seeds=3)
    plan = plan_tree(hosts(20), [], limits)
    assert plan.source_links() == 3
    assert_tree(plan, limits)


def test_holders_feed_and_the_source_sends_nothing() -> None:
    limits = Limits(fanout=2, seeds=4)
    plan = plan_tree(["a", "b", "c", "d", "held"], ["held"], limits)
    assert "held" not in plan.parents and plan.holders == ("held",)
    assert plan.source_links() == 0
    assert plan.children("held") == ["a", "b"]
    assert plan.parents["c"] == "a" and plan.parents["d"] == "a"
    assert plan.order() == ["a", "b", "c", "d"]


def test_duplicates_and_the_source_name() -> None:
    assert list(plan_tree(["a", "a", "b"], [], Limits()).parents) == ["a", "b"]
    with pytest.raises(ValueError, match="names the source"):
        plan_tree([SOURCE], [], Limits())
    with pytest.raises(ValueError, match="at least 1"):
        Limits(fanout=0)


def test_a_dead_feeder_is_cut_and_its_subtree_reattached_to_a_verified_holder() -> None:
    limits = Limits(fanout=2, seeds=1)
    plan = plan_tree(hosts(7), [], limits)
    # h000 seed; h001, h002 under it; h003..h006 under those.
    assert plan.children("h001") == ["h003", "h004"]
    healed = replan(plan, cut=["h001"], verified=["h000"], limits=limits)
    assert_tree(healed, limits)
    assert "h001" not in healed.parents and healed.cut == ("h001",)
    # h000 is a verified holder now: it feeds h002 (kept) and takes one orphan; the other goes below that one.
    assert healed.parents["h003"] == "h000"
    assert healed.parents["h004"] == "h003"
    assert "h000" in healed.holders
    # Children of kept edges keep their feeder (their partial files and the link they already have).
    assert healed.parents["h005"] == "h002" and healed.parents["h006"] == "h002"


def test_a_bad_seed_reattaches_to_the_source() -> None:
    limits = Limits(fanout=2, seeds=1)
    plan = plan_tree(hosts(3), [], limits)
    healed = replan(plan, cut=["h000"], verified=[], limits=limits)
    assert_tree(healed, limits)
    # The source's one link is free again: the first orphan takes it, the other hangs below it.
    assert healed.parents["h001"] == SOURCE
    assert healed.parents["h002"] == "h001"


def test_healing_never_makes_a_cycle_and_cut_hosts_never_feed() -> None:
    limits = Limits(fanout=2, seeds=1)
    plan = plan_tree(hosts(31), [], limits)
    cut: list[str] = []
    for victim in ["h001", "h004", "h000", "h010"]:
        cut.append(victim)
        plan = replan(plan, cut=[victim], verified=[], limits=limits)
        assert_tree(plan, limits)
        assert victim not in plan.parents and victim not in plan.parents.values()
    assert set(plan.parents) == set(hosts(31)) - set(cut)


def test_an_orphan_prefers_a_holder_then_a_rooted_host_then_the_source() -> None:
    limits = Limits(fanout=1, seeds=1)
    plan = plan_tree(["a", "b", "c"], ["held"], limits)
    assert plan.parents == {"a": "held", "b": "a", "c": "b"}
    healed = replan(plan, cut=["a"], verified=[], limits=limits)
    assert healed.parents == {"b": "held", "c": "b"}
    assert healed.source_links() == 0
    # The holder is full (it feeds b): c goes to the source only when no host outside its subtree has room.
    again = replan(healed, cut=["b"], verified=[], limits=limits)
    assert again.parents == {"c": "held"}
    last = replan(plan_tree(["a", "b"], [], limits), cut=["a"], verified=[], limits=limits)
    assert last.parents == {"b": SOURCE}
