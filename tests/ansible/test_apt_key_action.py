"""``ms4fleet.fleet.apt_key`` on this controller (connection local), the key served over loopback HTTP: the
pinned key is installed once, another key fails the task with the core's one line and writes nothing, and
check mode writes nothing. (The pyinfra engine runs the same installer: tests/pyinfra/test_sim_deploy.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.unit.test_apt_key import ED25519, RSA

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(tmp_path: Path, url: str, keyring: Path, fingerprint: str, *extra: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "json",
    }
    argv = [
        str(BIN / "ansible"),
        "localhost",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-m",
        "ms4fleet.fleet.apt_key",
        "-a",
        json.dumps({"url": url, "keyring": str(keyring), "fingerprint": fingerprint}),
        *extra,
    ]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    result: dict[str, Any] = json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result


def test_the_pinned_key_only(apt_key_server: str, tmp_path: Path) -> None:
    keyring = tmp_path / "keyrings" / "nvidia.asc"
    refused = _run(tmp_path, f"{apt_key_server}/rsa3072.asc", keyring, ED25519)
    assert refused.get("failed") is True and refused["changed"] is False
    assert refused["msg"] == (
        f"localhost: apt key: the key at {apt_key_server}/rsa3072.asc has fingerprint {RSA}, not the pinned {ED25519}: "
        "not installed"
    )
    assert not keyring.exists()
    checked = _run(tmp_path, f"{apt_key_server}/ed25519.asc", keyring, ED25519, "--check")
    assert checked["changed"] is True and not checked.get("failed") and not keyring.exists()
    installed = _run(tmp_path, f"{apt_key_server}/ed25519.asc", keyring, ED25519)
    assert installed["changed"] is True and installed["fingerprints"] == [ED25519]
    assert keyring.stat().st_mode & 0o777 == 0o644
    again = _run(tmp_path, f"{apt_key_server}/ed25519.asc", keyring, ED25519)
    assert again["changed"] is False and not again.get("failed")
