"""nginx config text, the in-flight gauges and the drain wait."""

from __future__ import annotations

import pytest

from ms4fleet.config import ConfigError
from ms4fleet.rollout.lb import (
    INVENTORY_KEY,
    Backend,
    LbSettings,
    in_flight,
    lb_inventory_of,
    nginx_conf,
    routed,
    wait_drained,
)

BACKENDS = [Backend("gpu-1", "10.0.0.1", 8000), Backend("gpu-1", "10.0.0.1", 8001), Backend("gpu-2", "10.0.0.2", 8000)]


def test_upstream_lists_every_replica_with_passive_health() -> None:
    text = nginx_conf(BACKENDS)
    assert "upstream ms4fleet_vllm {" in text
    assert "    server 10.0.0.1:8000 max_fails=1 fail_timeout=10s;  # gpu-1" in text
    assert "    server 10.0.0.2:8000 max_fails=1 fail_timeout=10s;  # gpu-2" in text
    assert "listen 8080;" in text
    assert "proxy_pass http://ms4fleet_vllm;" in text
    assert "proxy_buffering off;" in text
    assert "proxy_next_upstream error timeout http_500 http_502 http_503 non_idempotent;" in text
    assert " down;" not in text


def test_drained_host_is_marked_down_and_nothing_else_changes() -> None:
    before = nginx_conf(BACKENDS).splitlines()
    after = nginx_conf(BACKENDS, down={"gpu-1"}).splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [
        (
            "    server 10.0.0.1:8000 max_fails=1 fail_timeout=10s;  # gpu-1",
            "    server 10.0.0.1:8000 max_fails=1 fail_timeout=10s down;  # gpu-1",
        ),
        (
            "    server 10.0.0.1:8001 max_fails=1 fail_timeout=10s;  # gpu-1",
            "    server 10.0.0.1:8001 max_fails=1 fail_timeout=10s down;  # gpu-1",
        ),
    ]


def test_ipv6_settings_and_refusals() -> None:
    text = nginx_conf([Backend("a", "fd00::1", 8000), Backend("b", "fd00::2", 8000)], settings=LbSettings(9000, 2, 5))
    assert "server [fd00::1]:8000 max_fails=2 fail_timeout=5s;" in text and "listen 9000;" in text
    with pytest.raises(ValueError, match="every replica would be down"):
        nginx_conf(BACKENDS, down={"gpu-1", "gpu-2"})
    with pytest.raises(ValueError, match="at least one replica"):
        nginx_conf([])


METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="mistral-small-4"} 3.0
vllm:num_requests_waiting{engine="0",model_name="mistral-small-4"} 1.0
vllm:num_requests_running_total 99
vllm:kv_cache_usage_perc{engine="0",model_name="mistral-small-4"} 0.2
"""


def test_in_flight_sums_running_and_waiting() -> None:
    assert in_flight(METRICS) == 4.0
    assert in_flight(METRICS.replace("3.0", "0.0").replace("1.0\n", "0\n")) == 0.0
    with pytest.raises(ValueError, match="not a vLLM server"):
        in_flight("process_cpu_seconds_total 3\n")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_drain_needs_two_zero_reads_in_a_row() -> None:
    readings = iter([2.0, 0.0, 1.0, 0.0, 0.0, 5.0])
    clock = FakeClock()
    result = wait_drained(lambda: next(readings), timeout_s=10, interval_s=1, clock=clock, sleep=clock.sleep)
    assert result.drained and result.waited_s == 4.0 and result.last_in_flight == 0.0


def test_drain_times_out_and_unreadable_is_not_drained() -> None:
    clock = FakeClock()
    result = wait_drained(lambda: None, timeout_s=3, interval_s=1, clock=clock, sleep=clock.sleep)
    assert not result.drained and "still unreadable request(s) in flight after 3s" in result.detail
    clock = FakeClock()
    busy = wait_drained(lambda: 2.0, timeout_s=2, interval_s=1, clock=clock, sleep=clock.sleep)
    assert not busy.drained and busy.last_in_flight == 2.0


def test_the_config_reads_back_as_what_it_routes_to() -> None:
    ipv6 = [*BACKENDS, Backend("gpu-3", "fd00::3", 8000)]
    state = routed(nginx_conf(ipv6, down={"gpu-2"}))
    assert (state.up, state.down) == ({"gpu-1", "gpu-3"}, {"gpu-2"})
    # One replica of a host down makes the host count as down (it does not serve at full capacity).
    half = nginx_conf(BACKENDS).replace(
        "10.0.0.1:8001 max_fails=1 fail_timeout=10s;", "10.0.0.1:8001 max_fails=1 fail_timeout=10s down;"
    )
    assert routed(half).down == {"gpu-1"} and routed(half).up == {"gpu-2"}
    assert routed("") == routed("# not ours\nupstream x { server 10.0.0.9:1; }\n")


def test_one_replica_marked_down_while_its_hosts_other_replica_serves() -> None:
    """A GPU gone bad under one replica: only its server line changes; the host's other replica serves."""
    before = nginx_conf(BACKENDS).splitlines()
    after_text = nginx_conf(BACKENDS, down={BACKENDS[1]})
    changed = [(a, b) for a, b in zip(before, after_text.splitlines(), strict=True) if a != b]
    assert changed == [
        (
            "    server 10.0.0.1:8001 max_fails=1 fail_timeout=10s;  # gpu-1",
            "    server 10.0.0.1:8001 max_fails=1 fail_timeout=10s down;  # gpu-1",
        )
    ]
    back = routed(after_text)
    # The host counts as down for the rollout (not every replica serves); the one replica is named.
    assert back.up == {"gpu-2"} and back.down == {"gpu-1"}
    assert back.down_backends == {("gpu-1", "10.0.0.1:8001")}
    assert back.is_down(BACKENDS[1]) and not back.is_down(BACKENDS[0])


def test_hosts_and_single_replicas_mix_and_all_down_is_refused() -> None:
    text = nginx_conf(BACKENDS, down={"gpu-2", BACKENDS[0]})
    assert routed(text).down_backends == {("gpu-1", "10.0.0.1:8000"), ("gpu-2", "10.0.0.2:8000")}
    # Marking every replica down one by one is the same text as marking their hosts down.
    assert nginx_conf(BACKENDS, down={BACKENDS[0], BACKENDS[1]}) == nginx_conf(BACKENDS, down={"gpu-1"})
    with pytest.raises(ValueError, match="every replica would be down"):
        nginx_conf(BACKENDS, down={"gpu-1", BACKENDS[2]})


def test_the_deploys_load_balancer_inventory_is_one_path_named_by_every_host() -> None:
    assert lb_inventory_of([("gpu-1", {}), ("gpu-2", {})]) is None
    assert lb_inventory_of([("gpu-1", {INVENTORY_KEY: "lb.py"}), ("gpu-2", {INVENTORY_KEY: "lb.py"})]) == "lb.py"
    with pytest.raises(ConfigError, match=r"gpu-2: lb_inventory.*gpu-1 names 'lb.py': one load balancer"):
        lb_inventory_of([("gpu-1", {INVENTORY_KEY: "lb.py"}), ("gpu-2", {INVENTORY_KEY: "other.py"})])
    with pytest.raises(ConfigError, match=r"gpu-2: lb_inventory is not set but gpu-1 names"):
        lb_inventory_of([("gpu-1", {INVENTORY_KEY: "lb.py"}), ("gpu-2", {})])
    for bad in (3, "", "lb.py\nrm -rf /"):
        with pytest.raises(ConfigError, match=r"gpu-1: lb_inventory.*must be the path"):
            lb_inventory_of([("gpu-1", {INVENTORY_KEY: bad})])
