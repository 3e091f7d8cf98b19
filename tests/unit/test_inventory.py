"""The inventory loaders merge data exactly as pyinfra and Ansible do, for the keys ms4fleet reads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from ms4fleet.inventory import load_inventory
from ms4fleet_pyinfra.inventory import read_hosts

# pyinfra's own CLI loader, in a child process (it monkey-patches with gevent on import).
_PYINFRA_DUMP = textwrap.dedent(
    """
    import json, sys
    from pyinfra.api.state import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory_from_files
    with ctx_state.use(State(check_for_changes=False)):
        inventory = make_inventory_from_files(sys.argv[1], cwd=sys.argv[2])
    print(json.dumps({h.name: h.data.dict() for h in inventory}, sort_keys=True, default=str))
    """
)


def test_merge_matches_pyinfra_itself(tmp_path: Path) -> None:
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "all.py").write_text('ms4fleet_serving = {"max_num_seqs": 8}\nssh_user = "root"\n')
    (tmp_path / "group_data" / "h200.py").write_text(
        'ms4fleet_gpu = {"kind": "h200-sxm", "count": 8}\nms4fleet_serving = {"max_num_seqs": 32}\n'
    )
    (tmp_path / "group_data" / "canary.py").write_text('ms4fleet_serving = {"max_num_seqs": 16}\n')
    inventory = tmp_path / "fleet.py"
    inventory.write_text(
        textwrap.dedent(
            """
            h200 = [("gpu-1", {"ssh_hostname": "10.0.0.1"}), "gpu-2", "gpu-3"]
            canary = ["gpu-2"]
            b200 = ([("gpu-4", {"ms4fleet_serving": {"max_num_seqs": 4}})], {"ms4fleet_gpu": {"kind": "b200", "count": 8}})
            _private = ["not-a-host"]
            """
        )
    )
    ours = {host.name: host.data for host in read_hosts(inventory)}
    done = subprocess.run(
        [sys.executable, "-c", _PYINFRA_DUMP, str(inventory), str(tmp_path)], capture_output=True, text=True, check=True
    )
    theirs = json.loads(done.stdout)
    assert json.loads(json.dumps(ours, sort_keys=True, default=str)) == theirs
    assert ours["gpu-2"]["ms4fleet_serving"] == {"max_num_seqs": 16}  # the later group wins
    assert ours["gpu-4"]["ms4fleet_serving"] == {"max_num_seqs": 4}  # host beats group
    assert ours["gpu-3"]["ms4fleet_serving"] == {"max_num_seqs": 32}  # group beats all


def test_groups_and_connection_are_exposed(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.yml"
    inventory.write_text(
        textwrap.dedent(
            """
            all:
              children:
                h200:
                  vars: {ms4fleet_gpu: {kind: h200-sxm, count: 8}}
                  hosts:
                    gpu-1: {ansible_host: 10.0.0.1, ansible_port: 2222, ansible_user: ops}
            """
        )
    )
    (host,) = load_inventory(inventory)
    assert host.groups == ("h200",)
    assert host.connection == {"hostname": "10.0.0.1", "port": 2222, "user": "ops"}
    assert host.address == ("10.0.0.1", 2222)


def test_select_by_host_or_group() -> None:
    fleet = load_inventory(Path(__file__).resolve().parents[2] / "inventory" / "example.py")
    assert [h.name for h in fleet.select(["h100"])] == ["gpu-h100-01", "gpu-h100-02"]
    assert [h.name for h in fleet.select(["gpu-b200-01", "small"])] == ["gpu-b200-01", "gpu-h100-solo"]
    assert len(fleet.select(None)) == 5
