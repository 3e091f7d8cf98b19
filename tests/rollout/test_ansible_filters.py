"""The Ansible filters of playbooks/rollout.yml give the same answers as the core (and the pyinfra driver)."""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ms4fleet import paths
from ms4fleet.config import HostConfig
from ms4fleet.hostplan import plan_for_data
from ms4fleet.rollout.hostread import READ_SCRIPT
from ms4fleet.rollout.lb import CONF_PATH, DRAIN_WINDOW_S, Backend, nginx_conf
from ms4fleet.rollout.release import RELEASE_FILE, STAGED_DIR, ReleaseRecord, release_for
from ms4fleet.rollout.switch import ROLLBACK_CHECKS, ROLLBACK_TIMEOUT_S, release_ports, switch_script
from ms4fleet.rollout.waves import Policy, WaveSize, plan_waves
from ms4fleet.serving import plan_host

ROOT = Path(__file__).resolve().parents[2]
REVISION = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"


@pytest.fixture(scope="module")
def filters() -> SimpleNamespace:
    """The filters as Ansible gets them from the plugin (``filters.rollout_serial(...)``)."""
    # The checkout is the collection ms4fleet.fleet (playbooks/collections/ansible_collections/ms4fleet/fleet).
    sys.path.insert(0, str(ROOT / "playbooks" / "collections"))
    plugin = importlib.import_module("ansible_collections.ms4fleet.fleet.plugins.filter.rollout")
    return SimpleNamespace(**plugin.FilterModule().filters())


def hostvars(name: str, **serving: Any) -> dict[str, Any]:
    return {
        "inventory_hostname": name,
        "ansible_host": f"192.0.2.{name[-1]}",
        "ms4fleet_gpu": {"kind": "h200-sxm", "count": 2},
        "ms4fleet_serving": {"bind_address": "0.0.0.0", "tensor_parallel_size": 1, **serving},
        "ms4fleet_weights": {
            "source": "mirror",
            "mirror_url": "http://127.0.0.1:9/",
            "allow_insecure": True,
            "revision": REVISION,
        },
    }


def config(variables: dict[str, Any]) -> HostConfig:
    data = {k: v for k, v in variables.items() if k.startswith("ms4fleet_")}
    return HostConfig.from_host_data(variables["inventory_hostname"], data)


def test_serial_is_the_core_plan_flattened(filters: SimpleNamespace) -> None:
    hosts = [f"gpu-{i}" for i in range(1, 9)]
    serial = filters.rollout_serial(hosts, 1, "25%", 2)
    plan = plan_waves(hosts, set(hosts), Policy(1, WaveSize.parse("25%"), 2))
    assert serial == [len(b) for w in plan.waves for b in w.batches] == [1, 2, 2, 2, 1]
    assert filters.rollout_serial(hosts[:5], 1, "2", 1) == [1, 1, 1, 1, 1]


def test_site_yml_batches_only_the_serving_hosts_that_change_and_keeps_capacity(filters: SimpleNamespace) -> None:
    from ansible.errors import AnsibleFilterError

    hosts = [f"gpu-{i}" for i in range(1, 5)]
    assert filters.rollout_serial(hosts, changing=hosts, unavailable=[]) == [1, 1, 1, 1]
    assert filters.rollout_serial(hosts, changing=["gpu-2", "gpu-4"], unavailable=[]) == [1, 1]
    assert filters.rollout_serial(hosts, changing=[], unavailable=["gpu-1"]) == []
    # One host down already: draining another would leave 2 of 4 serving, below 3.
    with pytest.raises(
        AnsibleFilterError, match="--max-unavailable 1: switching gpu-2 would leave 2 of 4 hosts serving, below 3"
    ):
        filters.rollout_serial(hosts, changing=["gpu-2"], unavailable=["gpu-1"])
    assert filters.rollout_serial(hosts, None, None, 2, changing=["gpu-2"], unavailable=["gpu-1"]) == [1]


def test_batches_name_the_core_hosts_in_the_core_order(filters: SimpleNamespace) -> None:
    """site.yml queues its batched hosts in this order: the first is the core's canary, whatever order the
    changing hosts were listed in."""
    hosts = [f"gpu-{i}" for i in range(1, 6)]
    batches = filters.rollout_batches(hosts, 1, "2", 2, changing=["gpu-5", "gpu-3", "gpu-2"], unavailable=[])
    assert batches == [["gpu-2"], ["gpu-3", "gpu-5"]]
    assert [len(b) for b in batches] == filters.rollout_serial(
        hosts, 1, "2", 2, changing=["gpu-5", "gpu-3", "gpu-2"], unavailable=[]
    )


def test_options_left_out_are_the_core_policy(filters: SimpleNamespace) -> None:
    hosts = [f"gpu-{i}" for i in range(1, 10)]
    plan = plan_waves(hosts, set(hosts), Policy())
    assert filters.rollout_serial(hosts, None, None, None) == [len(b) for w in plan.waves for b in w.batches]
    assert filters.rollout_serial(hosts) == filters.rollout_serial(hosts, None, None, None)


def test_paths_are_the_core_paths(filters: SimpleNamespace) -> None:
    release = filters.rollout_release(hostvars("gpu-1"))
    assert filters.rollout_paths(release) == {
        "release_file": RELEASE_FILE,
        "staged_dir": f"{STAGED_DIR}/{release['id']}",
        "units_dir": paths.SYSTEMD_DIR,
        "lb_conf": CONF_PATH,
        "previous_dir": f"{STAGED_DIR}/previous",
        "drain_window_s": DRAIN_WINDOW_S,
        "rollback_checks": list(ROLLBACK_CHECKS),
        "rollback_timeout_s": ROLLBACK_TIMEOUT_S,
        "read_script": READ_SCRIPT,
    }


def test_release_record_and_nginx_text_match_the_core(filters: SimpleNamespace) -> None:
    a = hostvars("gpu-1")
    release = filters.rollout_release(a)
    core = release_for(config(a), plan_host(config(a)), release["created"], plan_for_data(config(a), {}))
    assert release == core.to_dict()
    # The plan is recorded with the release, as the pyinfra rollout records it.
    assert release["plan"] == plan_for_data(config(a), {}).to_json(contents={})
    text = filters.rollout_record("", release, "gpu-1")
    assert filters.rollout_current(text, "gpu-1")["id"] == release["id"]
    b = filters.rollout_release(hostvars("gpu-1", max_num_seqs=32))
    after = ReleaseRecord.parse("gpu-1", filters.rollout_record(text, b, "gpu-1"))
    assert (after.current and after.current.id, after.previous and after.previous.id) == (b["id"], release["id"])
    assert filters.rollout_current("", "gpu-1") is None
    conf = filters.rollout_nginx_conf([hostvars("gpu-1"), hostvars("gpu-2")], down=["gpu-2"])
    backends = [Backend(h, f"192.0.2.{h[-1]}", p) for h in ("gpu-1", "gpu-2") for p in (8000, 8001)]
    assert conf == nginx_conf(backends, {"gpu-2"})
    assert filters.rollout_in_flight("vllm:num_requests_running 2\nvllm:num_requests_waiting 1\n") == 3.0


def read_output(record_text: str, units: dict[str, str]) -> str:
    """What READ_SCRIPT prints on a host with this record and these unit files, all active."""
    lines = [f"{name} active {hashlib.sha256(text.encode()).hexdigest()}" for name, text in units.items()]
    return record_text + "--ms4fleet-units--\n" + "\n".join(lines) + "\n"


def test_deploy_change_is_the_core_s_and_only_a_disruptive_one_drains(filters: SimpleNamespace) -> None:
    """site.yml batches a serving host only when the core's deploy_change stops its replicas."""
    a = hostvars("gpu-1")
    release = filters.rollout_release(a)
    read = read_output(filters.rollout_record("", release, "gpu-1"), release["units"])
    assert filters.rollout_deploy_change(read, a) == {
        "change": "none", "reasons": [], "provisions": False, "disruptive": False,
    }  # fmt: skip
    live = filters.rollout_deploy_change(read, {**a, "ms4fleet_provision": {"reboot": "never"}})
    assert (live["change"], live["disruptive"], live["provisions"]) == ("live", False, True), live
    flags = filters.rollout_deploy_change(read, hostvars("gpu-1", max_num_seqs=32))
    assert (flags["change"], flags["disruptive"]) == ("replica-restart", True), flags
    # Unit files changed behind the record: unknown ground, drained once unless the host is converged.
    edited = read_output(
        filters.rollout_record("", release, "gpu-1"), {n: t + "#" for n, t in release["units"].items()}
    )
    assert filters.rollout_deploy_change(edited, a)["change"] == "reboot"
    assert filters.rollout_deploy_change(edited, a, True)["change"] == "none"
    assert filters.rollout_deploy_change("", a)["disruptive"]


def test_switch_replicas_and_load_balancer_place_are_the_core_s(filters: SimpleNamespace) -> None:
    two, one = hostvars("gpu-1"), hostvars("gpu-1", tensor_parallel_size=2)
    release_two, release_one = filters.rollout_release(two), filters.rollout_release(one)
    assert sorted(release_two["units"]) == ["ms4fleet-vllm-0.service", "ms4fleet-vllm-1.service"]
    # The script finds the units on the host (it removes those the release lacks), then starts and waits.
    units = list(release_one["units"])
    assert filters.rollout_switch(units, "/d") == switch_script(units, "/d", None, start=True, block=True)
    assert "systemctl enable --quiet ms4fleet-vllm-0.service && systemctl start ms4fleet-vllm-0.service" in (
        filters.rollout_switch(units, "/d")
    )
    assert filters.rollout_stop(units) == "systemctl disable --now --quiet ms4fleet-vllm-0.service"
    # The replicas of the release running now (to drain, to check a rollback), not of the new one.
    replicas = filters.rollout_replicas(one, release_two)
    ports = release_ports(ReleaseRecord.parse("h", filters.rollout_record("", release_two, "h")).current)  # type: ignore[arg-type]
    assert [(r["unit"], r["port"]) for r in replicas] == list(ports.items())
    assert [r["url"] for r in replicas] == [f"http://127.0.0.1:{p}" for p in ports.values()]
    assert filters.rollout_replicas(one, None) == filters.rollout_replicas(one, "") == []
    # Who the load balancer keeps out: failed, lost or mid-switch hosts stay out; verified and rolled-back
    # hosts rejoin; a host not switched in this run keeps its place.
    fleet = [{**hostvars(f"gpu-{i}"), **({"rollout_phase": p} if p else {})} for i, p in enumerate(
        ["verified", "rolled-back", "drained", "failed", None, None], start=1
    )]  # fmt: skip
    assert filters.rollout_lb_out(fleet, ["gpu-1", "gpu-2", "gpu-5"]) == ["gpu-3", "gpu-4", "gpu-5"]
    conf = filters.rollout_nginx_conf(fleet[:3], down=["gpu-2"])
    assert filters.rollout_routed_out([conf, ""]) == ["gpu-2"]


def test_filter_errors_are_one_line(filters: SimpleNamespace) -> None:
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match="--canary 9"):
        filters.rollout_serial(["a", "b"], 9)
    with pytest.raises(AnsibleFilterError, match=r"gpu-3: .* is unreadable"):
        filters.rollout_current("{", "gpu-3")


def test_playbook_serial_follows_the_core_plan(tmp_path: Path) -> None:
    """ansible-playbook itself: the play's batches are the core's, canary first, inventory order."""
    inventory = tmp_path / "inventory.yml"
    hosts = {f"gpu-{i}": {} for i in range(1, 6)}
    inventory.write_text(
        json.dumps({"all": {"children": {"ms4fleet_gpu": {"hosts": hosts, "vars": {"ansible_connection": "local"}}}}})
    )
    probe = ROOT / "playbooks" / f".rollout-serial-{tmp_path.name}.yml"
    probe.write_text(
        "- hosts: ms4fleet_gpu\n  gather_facts: false\n"
        "  serial: \"{{ groups['ms4fleet_gpu'] | ms4fleet.fleet.rollout_serial(1, '2', 2) }}\"\n"
        "  tasks:\n    - ansible.builtin.debug:\n        msg: \"batch {{ ansible_play_batch | join(',') }}\"\n"
    )
    try:
        out = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(probe)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
    finally:
        probe.unlink()
    batches = list(dict.fromkeys(line.split("batch ")[1].strip('"') for line in out.splitlines() if '"batch ' in line))
    assert batches == ["gpu-1", "gpu-2,gpu-3", "gpu-4,gpu-5"]
    syntax = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            "playbooks/rollout.yml",
            "--syntax-check",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert syntax.returncode == 0, syntax.stderr


def test_pins_are_the_core_pins_and_the_release_runs_the_digest(filters: SimpleNamespace) -> None:
    """The playbook's first play sets each Docker host's ms4fleet_runtime to this: the release then names it."""
    from ms4fleet.imagepin import pin_configs
    from tests.support.fakeregistry import DIGEST, MANIFEST, serve

    with serve() as registry:
        registry.manifests[("vllm/vllm-openai", "v0.32.0")] = (MANIFEST, DIGEST)
        runtime = {"image": "vllm/vllm-openai:v0.32.0", "registry_url": registry.url, "registry_allow_insecure": True}
        docker = [{**hostvars(f"gpu-{i}"), "ms4fleet_runtime": runtime} for i in (1, 2)]
        native = {**hostvars("gpu-3"), "ms4fleet_runtime": {"kind": "native"}}
        pins = filters.rollout_pins([*docker, native])
        assert len(registry.requests) == 1
        core = pin_configs([(config(docker[0]), None)])["gpu-1"]
    assert set(pins) == {"gpu-1", "gpu-2"}
    assert pins["gpu-1"] == core.runtime.model_dump(mode="json")
    assert pins["gpu-1"]["image"] == f"vllm/vllm-openai@{DIGEST}"
    release = filters.rollout_release({**docker[0], "ms4fleet_runtime": pins["gpu-1"]})
    assert release["image"] == f"vllm/vllm-openai@{DIGEST}"
    assert all(f" vllm/vllm-openai@{DIGEST} " in unit for unit in release["units"].values())
