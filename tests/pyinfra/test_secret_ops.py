"""Secrets in the planned commands: an env-referenced API key reaches the host only through stdin, never
in a command line, and the EnvironmentFile is built on the host by the core's script."""

from __future__ import annotations

import pytest

from ms4fleet import apikey, paths
from tests.pyinfra.harness import plan, raw_plan

KEY = "sk-ms4fleet-test-4f1c9a"
HOST = {
    "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
    "ms4fleet_serving": {"api_key": {"env": "MS4FLEET_TEST_API_KEY"}},
    "ms4fleet_weights": {
        "source": "mirror",
        "mirror_url": "https://mirror.internal",
        "revision": "5e" * 20,
        "manifest_sha256": "ab" * 32,
    },
}
UBUNTU = {"cat /etc/os-release": "ID=ubuntu\nVERSION_ID=24.04\n"}


def test_env_secret_travels_by_stdin_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MS4FLEET_TEST_API_KEY", KEY)
    planned = plan(HOST, UBUNTU)
    upload = planned["secret files from the deploying environment"]
    assert upload == [
        "sh -c 'umask 077; mkdir -p /etc/ms4fleet/secrets; cat > /etc/ms4fleet/secrets/api_key.tmp && "
        "mv /etc/ms4fleet/secrets/api_key.tmp /etc/ms4fleet/secrets/api_key'"
    ]
    env_file = planned[f"{paths.ENV_FILE} (0600)"]
    assert len(env_file) == 1 and "VLLM_API_KEY" in env_file[0] and "/etc/ms4fleet/secrets/api_key" in env_file[0]
    everything = "\n".join(c for commands in planned.values() if commands != "noop" for c in commands)
    assert KEY not in everything
    unit = next(c for c in planned["ms4fleet-vllm-0.service"] if c.startswith("upload"))
    assert "EnvironmentFile=/etc/ms4fleet/vllm.env" in unit and "-e VLLM_API_KEY" in unit and KEY not in unit


def test_the_value_is_the_upload_command_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MS4FLEET_TEST_API_KEY", KEY)
    (command,) = raw_plan(HOST, UBUNTU)["secret files from the deploying environment"]
    assert command.connector_arguments["_stdin"] == f"{KEY}\n"


def test_missing_env_secret_fails_the_host_not_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MS4FLEET_TEST_API_KEY", raising=False)
    planned = plan(HOST, UBUNTU)
    assert planned["secret files from the deploying environment"] == ["call fail"]


def test_generated_key_travels_by_stdin_as_the_controller_file() -> None:
    generated = {**HOST, "ms4fleet_serving": {}}
    (command,) = raw_plan(generated, UBUNTU)["secret files from the deploying environment"]
    # The host file gets the controller file's bytes exactly (the Ansible role copies that file as it is).
    key_file = apikey.key_path()
    assert command.connector_arguments["_stdin"].encode() == key_file.read_bytes()
    assert key_file.stat().st_mode & 0o777 == 0o600
    planned = plan(generated, UBUNTU)
    everything = "\n".join(c for commands in planned.values() if commands != "noop" for c in commands)
    assert apikey.read_key() not in everything
    unit = next(c for c in planned["ms4fleet-vllm-0.service"] if c.startswith("upload"))
    assert "EnvironmentFile=/etc/ms4fleet/vllm.env" in unit and "-e VLLM_API_KEY" in unit


def test_an_open_endpoint_has_no_key_and_no_environment_file() -> None:
    planned = plan({**HOST, "ms4fleet_serving": {"open_endpoint": True}}, UBUNTU)
    assert "secret files from the deploying environment" not in planned
    unit = next(c for c in planned["ms4fleet-vllm-0.service"] if c.startswith("upload"))
    assert "EnvironmentFile" not in unit and "VLLM_API_KEY" not in unit
