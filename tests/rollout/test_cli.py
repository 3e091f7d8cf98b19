"""The rollout/status command lines and the driver's checks that run before any host is contacted."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.config import ConfigError
from ms4fleet.inventory import load_inventory
from ms4fleet.rollout.release import ReleaseRecord
from ms4fleet.serving import plan_host
from ms4fleet_pyinfra.rollout.cli import register_rollout, register_status
from ms4fleet_pyinfra.rollout.hostops import parse_read
from ms4fleet_pyinfra.rollout.lbctl import backends_for, load_lb_inventory

REVISION = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"
# By digest: a rollout resolves a tag at its registry, and these tests never connect.
PINNED_IMAGE = f"vllm/vllm-openai@sha256:{'5' * 64}"


def inventory(
    tmp_path: Path, hosts: int = 2, bind: str = "0.0.0.0", weights: bool = True, runtime: dict[str, Any] | None = None
) -> Path:
    # Addresses in TEST-NET-1 (RFC 5737): nothing answers there, and these tests must never connect.
    entries = [
        (f"gpu-{i}", {"ssh_hostname": f"192.0.2.{i}", "lb_backend_address": f"10.9.0.{i}"}) for i in range(1, hosts + 1)
    ]
    shared = {
        "ms4fleet_gpu": {"kind": "h200-sxm", "count": 2},
        "ms4fleet_serving": {"bind_address": bind, "tensor_parallel_size": 1},
        "ms4fleet_runtime": runtime or {"image": PINNED_IMAGE, "vllm_version": "0.32.0"},
    }
    if weights:
        shared["ms4fleet_weights"] = {
            "source": "mirror",
            "mirror_url": "http://127.0.0.1:9/",
            "allow_insecure": True,
            "revision": REVISION,
        }
    path = tmp_path / "inventory.py"
    path.write_text(f"gpus = ({entries!r}, {shared!r})\n")
    return path


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ms4fleet")
    sub = parser.add_subparsers(dest="command", required=True)
    register_rollout(sub)
    register_status(sub)
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--canary", "3"], "--canary 3: more than the fleet's 2 host(s); use at most 2"),
        (["--max-unavailable", "2"], "--max-unavailable 2: would take all 2 hosts out"),
        (["--wave", "0%"], "--wave '0%': a share must be above 0%"),
    ],
)
def test_bad_options_fail_with_one_line_before_any_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    assert cli("rollout", str(inventory(tmp_path)), *options) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ms4fleet: error: ") and message in err[0]
    assert not (tmp_path / "rollout-report").exists()


def test_bad_host_config_names_host_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lb = tmp_path / "lb.py"
    lb.write_text("lb = [('lb-1', {'ssh_hostname': '192.0.2.99'})]\n")
    assert cli("rollout", str(inventory(tmp_path, bind="127.0.0.1")), "--lb-inventory", str(lb)) == 2
    err = capsys.readouterr().err
    assert "gpu-1" in err and "serving.bind_address" in err and "load balancer" in err
    assert cli("rollout", str(inventory(tmp_path, weights=False))) == 2
    assert "ms4fleet_weights" in capsys.readouterr().err


def test_an_image_tag_the_registry_does_not_answer_for_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The release pins the image before any host is touched: no answer from the registry is one line, exit 2."""
    runtime = {
        "image": "vllm/vllm-openai:v0.32.0",
        "registry_url": "http://127.0.0.1:9",
        "registry_allow_insecure": True,
    }
    assert cli("rollout", str(inventory(tmp_path, runtime=runtime)), "--report-dir", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("ms4fleet: error: gpu-1: image vllm/vllm-openai:v0.32.0: http://127.0.0.1:9/v2/")
    assert "check that the controller reaches the registry" in err[0]
    assert not (tmp_path / "r" / "rollout.json").exists()


def test_backends_use_the_lb_address_and_every_replica_port(tmp_path: Path) -> None:
    fleet = load_inventory(inventory(tmp_path))
    plans = {spec.name: plan_host(spec.config) for spec in fleet}
    backends = backends_for(list(fleet), plans)
    assert [(b.host, b.server) for b in backends] == [
        ("gpu-1", "10.9.0.1:8000"),
        ("gpu-1", "10.9.0.1:8001"),
        ("gpu-2", "10.9.0.2:8000"),
        ("gpu-2", "10.9.0.2:8001"),
    ]
    fleet = load_inventory(inventory(tmp_path, bind="127.0.0.1"))
    with pytest.raises(ConfigError, match=r"gpu-1.*serving\.bind_address"):
        backends_for(list(fleet), {spec.name: plan_host(spec.config) for spec in fleet})


def test_lb_inventory(tmp_path: Path) -> None:
    path = tmp_path / "lb.py"
    path.write_text("lb = (['lb-1', ('lb-2', {'ssh_port': 2222})], {'ssh_user': 'ops'})\n_private = ['x']\n")
    hosts = load_lb_inventory(str(path))
    assert [(h.name, dict(h.data)) for h in hosts] == [
        ("lb-1", {"ssh_user": "ops"}),
        ("lb-2", {"ssh_user": "ops", "ssh_port": 2222}),
    ]
    path.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no load balancer host"):
        load_lb_inventory(str(path))


def test_parse_read() -> None:
    record = ReleaseRecord()
    text = record.to_json() + "--ms4fleet-units--\nms4fleet-vllm-0.service active\nms4fleet-vllm-1.service failed\n"
    facts = parse_read("gpu-1", text)
    assert facts.units == {"ms4fleet-vllm-0.service": "active", "ms4fleet-vllm-1.service": "failed"}
    assert not facts.all_active
    assert facts.unit_sha256 == {}
    digest = "ab" * 32
    hashed = parse_read("gpu-1", f"--ms4fleet-units--\nms4fleet-vllm-0.service active {digest}\n")
    assert hashed.units == {"ms4fleet-vllm-0.service": "active"}
    assert hashed.unit_sha256 == {"ms4fleet-vllm-0.service": digest}
    empty = parse_read("gpu-1", "--ms4fleet-units--\n")
    assert empty.record == ReleaseRecord() and empty.units == {} and not empty.all_active


def test_drain_polls_the_ports_of_the_release_running_now(tmp_path: Path) -> None:
    from ms4fleet.rollout.release import release_for
    from ms4fleet_pyinfra.rollout.hostops import _serving_ports
    from ms4fleet_pyinfra.rollout.tracker import HostFacts

    spec = load_inventory(inventory(tmp_path)).hosts[0]
    old_config = spec.config.model_copy(update={"serving": spec.config.serving.model_copy(update={"port": 9000})})
    running = release_for(old_config, plan_host(old_config))
    units = dict.fromkeys(running.units, "active")
    # vLLM's own ports (loopback, behind the host proxy): where the drain reads /metrics over SSH.
    assert _serving_ports(HostFacts(ReleaseRecord(current=running), units)) == [29000, 29001]
    # Nothing to wait for when the replicas are not all running, or nothing ran before.
    assert (
        _serving_ports(HostFacts(ReleaseRecord(current=running), {**units, "ms4fleet-vllm-1.service": "failed"})) == []
    )
    assert _serving_ports(HostFacts(ReleaseRecord(), units)) == []


def test_a_controller_without_rsync_stops_the_rollout_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the core CLI (which prints the core's preflight line), before any host is contacted."""
    from ms4fleet.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no rsync, no ssh
    assert main(["rollout", str(inventory(tmp_path))]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "ms4fleet: controller: rsync not found on PATH (needed for weights staging): "
        "install it with `apt-get install rsync`"
    ]


def test_the_driver_plans_every_step_from_the_pinned_image(tmp_path: Path) -> None:
    """One request for the fleet; the targets, their recorded plans and the pre-stage's image name the digest."""
    from ms4fleet.rollout.waves import Policy
    from ms4fleet_pyinfra.rollout.driver import Rollout
    from tests.support.fakeregistry import DIGEST, MANIFEST, serve

    with serve() as registry:
        registry.manifests[("vllm/vllm-openai", "v0.32.0")] = (MANIFEST, DIGEST)
        runtime = {"image": "vllm/vllm-openai:v0.32.0", "registry_url": registry.url, "registry_allow_insecure": True}
        rollout = Rollout(load_inventory(str(inventory(tmp_path, hosts=2, runtime=runtime))), Policy())
        assert len(registry.requests) == 1
    pinned = f"vllm/vllm-openai@{DIGEST}"
    for name in ("gpu-1", "gpu-2"):
        target, plan = rollout.targets[name], rollout.hostplans[name]
        assert target.image == pinned and target.runtime == f"docker {pinned}"
        assert plan.image.ref == pinned and target.plan is not None and target.plan["image"]["ref"] == pinned
        assert all(f" {pinned} " in text for text in target.units.values())
