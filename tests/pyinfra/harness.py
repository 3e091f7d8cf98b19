"""pyinfra's fake connector driven by spec files: host data and canned command outputs in, the commands each
operation of ``deploy_host`` would run out (pyinfra's own operation-test style, for the whole deploy)."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

from pyinfra.api import Config, FileUploadCommand, FunctionCommand, Inventory, State, StringCommand
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

from ms4fleet.config import HostConfig
from ms4fleet_pyinfra.deploys.host import deploy_host

SPECS = Path(__file__).parent.parent / "data" / "pyinfra"


def render(command: Any) -> str:
    if isinstance(command, StringCommand):
        return str(command.get_raw_value())
    if isinstance(command, FileUploadCommand):
        src = command.src
        body = src.getvalue() if isinstance(src, StringIO) else str(src)
        return f"upload {command.dest}\n{body}"
    if isinstance(command, FunctionCommand):
        return f"call {command.function.__name__}"
    return repr(command)


def plan(host_data: dict[str, Any], responses: dict[str, Any], name: str = "gpu-1") -> dict[str, list[str] | str]:
    """Prepare the deploy for one fake host; return ``{operation name: commands}`` (``"noop"`` when none)."""
    return {
        label: [render(c) for c in commands] or "noop"
        for label, commands in raw_plan(host_data, responses, name).items()
    }


def raw_plan(host_data: dict[str, Any], responses: dict[str, Any], name: str = "gpu-1") -> dict[str, list[Any]]:
    """The same, with pyinfra's command objects (their connector arguments such as ``_stdin`` included)."""
    data = {"fake_responses": responses, "fake_delay": 0, "fake_delay_jitter": 0, **host_data}
    inventory = Inventory(([(f"@fake/{name}", data)], {}))
    state = State(inventory, Config(FAIL_PERCENT=0))
    connect_all(state)
    host = inventory.get_host(f"@fake/{name}")
    config = HostConfig.from_host_data(name, host_data)
    add_deploy(state, deploy_host, config, False, host=host)
    out: dict[str, list[Any]] = {}
    with ctx_state.use(state), ctx_host.use(host):
        for op_hash in host.op_hash_order:
            label = sorted(state.op_meta[op_hash].names)[0].removeprefix("ms4fleet | ")
            out[label] = list(state.get_op_data_for_host(host, op_hash).command_generator())
    return out


def fleet_order(hosts: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> list[list[str]]:
    """Prepare the deploy for several fake hosts in one state (name -> host data, canned outputs) and return
    the order pyinfra runs their operations in (each entry: the names of one operation), as its CLI orders them.
    pyinfra raises PyinfraError when the hosts' operation sequences do not fit in one order (a cycle)."""
    inventory = Inventory(
        (
            [
                (f"@fake/{name}", {"fake_responses": r, "fake_delay": 0, "fake_delay_jitter": 0, **d})
                for name, (d, r) in hosts.items()
            ],
            {},
        )
    )
    state = State(inventory, Config(FAIL_PERCENT=0))
    connect_all(state)
    # As pyinfra's CLI runs deploy.py: once per host, in that host's context.
    state.set_stage(StateStage.Prepare)
    with ctx_state.use(state):
        for name, (host_data, _) in hosts.items():
            with ctx_host.use(inventory.get_host(f"@fake/{name}")):
                deploy_host(HostConfig.from_host_data(name, host_data), False)
    return [sorted(state.op_meta[op_hash].names) for op_hash in state.get_op_order()]


def load_spec(path: Path) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return spec
