"""Action ``ms4fleet.fleet.verify``: the core's endpoint gate against every vLLM replica of the host.

vLLM listens on the host's loopback only (its internal port, behind the host proxy), so the checks
cannot reach them from the controller directly. This action opens an SSH tunnel over the same transport
Ansible uses (``ssh -N -L 127.0.0.1:<free local port>:127.0.0.1:<port>``, with the connection's host,
port, user, key and ssh args), points the core's ``ms4fleet.verify.verify`` at the local end, and closes
it. The HTTP client therefore stays the core's (httpx, jsonschema on the controller) while hosts need
nothing but sshd. With ``ansible_connection=local`` it connects directly.

On a failed check the replica's journal is read on the host to name the cause (``ms4fleet.causes``).
The API key is the one the core resolves (``ms4fleet.secrets.service_secret_refs``): the controller's
generated key or environment variable, else the host file, read under no_log; none for an open endpoint.
"""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any, ClassVar

from ansible.errors import AnsibleActionFail
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.action import CoreAction, Spec
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.sshtarget import ssh_target

from ms4fleet.apikey import ApiKeyError
from ms4fleet.childenv import child_env
from ms4fleet.config import HostConfig
from ms4fleet.converged import VERIFIED_FILE, record_command, verified_record
from ms4fleet.hostplan import gates
from ms4fleet.secrets import controller_value, secret_path, service_secret_refs
from ms4fleet.serving import local_address, plan_host
from ms4fleet.verify import CHECKS, verify

LOG_LINES = 400


class ActionModule(CoreAction):
    ARGUMENT_SPEC: ClassVar[Spec] = {
        "checks": {"type": "list", "elements": "str", "choices": list(CHECKS)},
        "skip": {"type": "list", "elements": "str", "default": [], "choices": list(CHECKS)},
        "timeout": {"type": "float"},
        "tunnel_timeout": {"type": "float", "default": 30.0},
        # vLLM ports to check instead of the plan's replicas (a rollback: the previous release's, which may
        # be other replicas); nothing is recorded for the converged check then.
        "ports": {"type": "list", "elements": "int"},
    }

    def act(self, result: dict[str, Any], args: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        if self._task.check_mode:
            result.update(skipped=True, msg="check mode: the endpoint is not exercised")
            return result
        config = self.host_config(variables)
        plan = plan_host(config)
        served = plan.served_model_name
        # The host plan's verification gate, unless the task names its own checks or timeout.
        gate = gates(config, plan)
        selected = set(args["checks"] or gate.verify_checks) - set(args["skip"])
        api_key = self._api_key(config)
        target = local_address(config)
        reports = []
        if args["ports"] is not None:
            targets = [(index, f"port {port}", port, None) for index, port in enumerate(args["ports"])]
        else:
            targets = [(r.index, r.unit_name, r.internal_port, r.unit_name) for r in plan.replicas]
        for index, name, port, unit in targets:
            with self._tunnel(target, port, args["tunnel_timeout"], variables) as url:
                report = verify(
                    url,
                    served,
                    api_key=api_key,
                    checks=selected,
                    logs=None if unit is None else (lambda unit=unit: self._journal(unit)),
                    timeout_s=args["timeout"] or gate.verify_timeout_s,
                    open_endpoint=config.serving.open_endpoint,
                )
            reports.append({"index": index, "unit": name, **report.to_dict()})
        failed = [r for r in reports if not r["ok"]]
        result.update(changed=False, replicas=reports, ok=not failed)
        if args["ports"] is not None:
            if failed:
                first = failed[0]
                result.update(failed=True, msg=f"{config.name}: {first['unit']} failed: {', '.join(_failed(first))}")
            return result
        # The record the core's converged check requires (the same bytes the pyinfra engine leaves).
        summary = [
            {"replica": r.index, "port": r.port, "ok": report["ok"], "failed": _failed(report)}
            for r, report in zip(plan.replicas, reports, strict=True)
        ]
        record = verified_record(served, sorted(selected), summary)
        self._low_level_execute_command(
            f"rm -f {shlex.quote(VERIFIED_FILE)}" if failed else f"sh -c {shlex.quote(record_command(record))}",
            sudoable=True,
        )
        if failed:
            first = failed[0]
            checks = ", ".join(_failed(first))
            causes = "; ".join(f"{c['id']} ({c['fix']})" for c in first["causes"])
            result.update(
                failed=True,
                msg=f"{config.name}: replica {first['index']} ({first['unit']}) failed verification: {checks}"
                + (f"; cause: {causes}" if causes else ""),
            )
        return result

    def _journal(self, unit: str) -> str:
        done = self._low_level_execute_command(
            f"journalctl --no-pager --output cat -n {LOG_LINES} -u {shlex.quote(unit)}", sudoable=True
        )
        return str(done.get("stdout", ""))

    def _api_key(self, config: HostConfig) -> str | None:
        refs = service_secret_refs(config)
        if "VLLM_API_KEY" not in refs:
            return None
        name, ref = refs["VLLM_API_KEY"]
        if ref.supplied:
            # The controller's own value: the generated key (ms4fleet.apikey) or an environment variable.
            try:
                value = controller_value(ref)
            except ApiKeyError as err:
                raise AnsibleActionFail(f"{config.name}: serving.api_key: {err}") from None
            if not value:
                raise AnsibleActionFail(f"{config.name}: serving.api_key: environment variable {ref.env} is not set")
            return value
        path = secret_path(ref, name)
        done = self._low_level_execute_command(f"cat {shlex.quote(path)}", sudoable=True)
        value = str(done.get("stdout", "")).strip()
        if done.get("rc") != 0 or not value:
            raise AnsibleActionFail(f"{config.name}: serving.api_key: cannot read {path} on the host")
        return value

    @contextlib.contextmanager
    def _tunnel(self, target: str, port: int, timeout_s: float, variables: dict[str, Any]) -> Iterator[str]:
        """A base URL on the controller that reaches ``target:port`` as seen from the host."""
        host = ssh_target(self, "tunnel", variables)
        if host.hostname is None:
            yield f"http://{target if ':' not in target else f'[{target}]'}:{port}"
            return
        # ssh takes the first value given for an option: ours come before the connection's own ssh args, so
        # the tunnel never rides (or becomes) a ControlMaster that would outlive it.
        ssh, *options = host.ssh_argv()
        argv = [ssh, "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ControlMaster=no", *options]
        remote = f"[{target}]" if ":" in target else target
        deadline = time.monotonic() + timeout_s
        while True:
            local = _free_port()
            proc = subprocess.Popen(
                [*argv, "-L", f"127.0.0.1:{local}:{remote}:{port}", host.hostname],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=child_env(),
            )
            try:
                if _wait_open(proc, local, deadline):
                    yield f"http://127.0.0.1:{local}"
                    return
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                # Another process took the port between the probe and ssh's bind: try another one.
                if "Address already in use" not in err or time.monotonic() > deadline:
                    raise AnsibleActionFail(f"{host}: the ssh tunnel to {target}:{port} did not open: {err[-300:]}")
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _failed(report: dict[str, Any]) -> list[str]:
    return [f"{c['name']}: {c['detail']}" for c in report["checks"] if c["status"] == "fail"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_open(proc: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    """True once ssh listens on ``port``; False when ssh exited (or the deadline passed) first."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False
