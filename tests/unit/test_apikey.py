"""The generated API key: secure by default. A host without serving.api_key gets the controller's generated
key unless its endpoint is open by configuration; the key file is made once, atomically, 0600 from its first
byte in a 0700 directory; the plan records only where it comes from; ``ms4fleet api-key`` prints it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ms4fleet import apikey
from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.inventory import RawHost, validate_hosts
from ms4fleet.secrets import SecretSource, api_key_summary, controller_value, service_secret_refs
from ms4fleet.serving import plan_host
from ms4fleet.statedir import STATE_ENV

ROOT = Path(__file__).resolve().parents[2]
GPU = {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 8}}
WEIGHTS = {
    "ms4fleet_weights": {
        "source": "mirror",
        "mirror_url": "https://mirror.internal",
        "revision": "5e" * 20,
        "manifest_sha256": "ab" * 32,
    }
}


@pytest.fixture(autouse=True)
def state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv(STATE_ENV, str(tmp_path / "state"))
    return tmp_path / "state"


def config(**serving: object) -> HostConfig:
    return HostConfig.from_host_data("gpu-1", {**GPU, "ms4fleet_serving": serving})


def test_no_api_key_means_the_generated_one_unless_open() -> None:
    assert service_secret_refs(config()) == {"VLLM_API_KEY": ("api_key", SecretSource(generated=True))}
    assert service_secret_refs(config(open_endpoint=True)) == {}
    assert service_secret_refs(config(api_key={"env": "K"})) == {"VLLM_API_KEY": ("api_key", SecretSource(env="K"))}
    unit = plan_host(config()).replicas[0].unit_text
    assert "EnvironmentFile=/etc/ms4fleet/vllm.env" in unit and "-e VLLM_API_KEY" in unit
    assert "VLLM_API_KEY" not in plan_host(config(open_endpoint=True)).replicas[0].unit_text


def test_open_and_a_key_together_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^gpu-1: serving sets open_endpoint: true and an api_key"):
        config(open_endpoint=True, api_key={"file": "/etc/ms4fleet/key"})
    with pytest.raises(ConfigError, match=r"serving.open_endpoint='yes' must be a valid boolean"):
        config(open_endpoint="yes")


def test_the_key_file_is_private_from_its_first_byte(state: Path) -> None:
    old = os.umask(0)  # the most permissive umask: the file must still be 0600, its directory 0700
    try:
        path = apikey.ensure_key()
    finally:
        os.umask(old)
    assert path == state / "api-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(state.stat().st_mode) == 0o700
    key = apikey.read_key()
    assert len(key) == 43 and path.read_bytes() == f"{key}\n".encode()
    assert [p.name for p in state.iterdir()] == ["api-key"], "no temporary file is left behind"
    assert apikey.ensure_key() == path and apikey.read_key() == key, "made once"


def test_concurrent_runs_agree_on_one_key(state: Path) -> None:
    keys: list[str] = []

    def make() -> None:
        keys.append(apikey.read_key(apikey.ensure_key()))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys) == 8


def test_a_readable_or_foreign_key_file_is_refused_without_showing_it(state: Path) -> None:
    path = apikey.ensure_key()
    key = apikey.read_key()
    path.chmod(0o644)
    with pytest.raises(apikey.ApiKeyError) as refused:
        controller_value(SecretSource(generated=True))
    assert f"chmod 600 {path}" in str(refused.value) and "mode 0644" in str(refused.value)
    assert key not in str(refused.value)
    path.chmod(0o600)
    path.write_text("two words\n")
    with pytest.raises(apikey.ApiKeyError, match="holds no key on one line"):
        apikey.read_key()


def test_deploy_validation_makes_the_key_before_any_host_is_touched(state: Path) -> None:
    raw = [RawHost("gpu-1", (), {**GPU, **WEIGHTS})]
    validate_hosts(raw, deploying=False)
    assert not (state / "api-key").exists(), "planning creates nothing"
    validate_hosts(raw, deploying=True)
    assert (state / "api-key").is_file()
    (state / "api-key").unlink()
    validate_hosts(
        [RawHost("gpu-1", (), {**GPU, **WEIGHTS, "ms4fleet_serving": {"open_endpoint": True}})], deploying=True
    )
    assert not (state / "api-key").exists(), "an open fleet needs no key"


def test_an_unwritable_state_dir_is_one_line_naming_the_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(STATE_ENV, str(blocker / "state"))
    with pytest.raises(ConfigError, match=r"^gpu-1: serving.api_key is unset and cannot create the API key file"):
        validate_hosts([RawHost("gpu-1", (), {**GPU, **WEIGHTS})], deploying=True)


def test_the_plan_says_where_the_key_comes_from_never_the_key(state: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.yml"
    inventory.write_text(
        "all:\n  hosts:\n"
        "    gpu-1: {ms4fleet_gpu: {kind: h200-sxm, count: 8}}\n"
        "    gpu-2: {ms4fleet_gpu: {kind: h200-sxm, count: 8}, ms4fleet_serving: {open_endpoint: true}}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = [sys.executable, "-m", "ms4fleet.cli"]
    planned = subprocess.run([*run, "plan", str(inventory), "--json"], capture_output=True, text=True, env=env)
    hosts = {h["host"]: h for h in json.loads(planned.stdout)["hosts"]}
    assert hosts["gpu-1"]["api_key"] == {
        "source": "generated",
        "host_file": "/etc/ms4fleet/secrets/api_key",
        "controller_file": str(state / "api-key"),
        "exists": False,
    }
    assert hosts["gpu-1"]["plan"]["secrets"]["refs"][0]["generated"] is True
    assert hosts["gpu-2"]["api_key"]["source"] == "open" and hosts["gpu-2"]["plan"]["secrets"]["needed"] is False
    printed = subprocess.run([*run, "api-key", str(inventory)], capture_output=True, text=True, env=env)
    assert printed.returncode == 0 and printed.stderr == ""
    key = printed.stdout.strip()
    assert key == apikey.read_key() and api_key_summary(config())["exists"] is True
    again = subprocess.run([*run, "plan", str(inventory), "--json"], capture_output=True, text=True, env=env)
    assert key not in again.stdout
    path = subprocess.run([*run, "api-key", str(inventory), "--path"], capture_output=True, text=True, env=env)
    assert path.stdout == f"{state / 'api-key'}\n"
    open_only = subprocess.run(
        [*run, "api-key", str(inventory), "--limit", "gpu-2"], capture_output=True, text=True, env=env
    )
    assert open_only.returncode == 1 and open_only.stdout == "" and "gpu-2: open" in open_only.stderr
