"""The core's EnvironmentFile script in check mode (the pyinfra engine's read-only EnvFileState fact)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ms4fleet import paths
from ms4fleet.config import HostConfig
from ms4fleet.secrets import env_file_script


def _run(script: str) -> str:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout


def test_check_mode_reports_without_writing(tmp_path: Path) -> None:
    config = HostConfig.from_host_data(
        "gpu-1",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"api_key": {"file": str(tmp_path / "k")}},
        },
    )
    (tmp_path / "k").write_text("sk-test-123\n")
    (tmp_path / "k").chmod(0o600)
    etc = tmp_path / "etc"
    check = env_file_script(config, check=True).replace(paths.ETC_DIR, str(etc))
    apply = env_file_script(config).replace(paths.ETC_DIR, str(etc))
    assert _run(check) == "changed\n"
    assert not etc.exists()
    assert _run(apply) == "changed\n"
    assert _run(check) == "unchanged\n"
    (tmp_path / "k").write_text("sk-rotated\n")
    assert _run(check) == "changed\n"
    assert (etc / "vllm.env").read_text() == 'VLLM_API_KEY="sk-test-123"\n'
    assert sorted(p.name for p in etc.iterdir()) == ["vllm.env"]
    assert "sk-" not in check
