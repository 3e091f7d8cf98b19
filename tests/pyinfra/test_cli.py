"""``pyinfra INVENTORY deploy.py`` (and the packaged ``ms4fleet_pyinfra.deploy``) as a user runs it (fake
connector hosts): every host is validated before any is touched, and ``--limit`` selects groups and hosts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).with_name("pyinfra")
WEIGHTS = {
    "source": "mirror",
    "mirror_url": "https://mirror.internal",
    "revision": "5e" * 20,
    "manifest_sha256": "ab" * 32,
}
UBUNTU = "ID=ubuntu\\nVERSION_ID=24.04\\n"


def _inventory(tmp_path: Path, bad: bool = False) -> Path:
    serving = {"gpu_memory_utilisation": 0.9} if bad else {}
    host = (
        '{{"fake_delay": 0, "fake_delay_jitter": 0, "fake_responses": {{"cat /etc/os-release": "{os}"}}, '
        '"ms4fleet_gpu": {{"kind": "h200-sxm", "count": 8}}, "ms4fleet_weights": {w!r}, "ms4fleet_serving": {s!r}}}'
    )
    text = (
        f"h200 = [('@fake/gpu-1', {host.format(os=UBUNTU, w=WEIGHTS, s={})}), "
        f"('@fake/gpu-2', {host.format(os=UBUNTU, w=WEIGHTS, s={})})]\n"
        f"b200 = [('@fake/gpu-3', {host.format(os=UBUNTU, w=WEIGHTS, s=serving)})]\n"
    )
    path = tmp_path / "inventory.py"
    path.write_text(text)
    return path


def _run(*args: str, cwd: Path = ROOT, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path} if path is not None else None
    return subprocess.run(
        [str(PYINFRA), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_one_bad_host_stops_the_run_before_any_host_is_touched(tmp_path: Path) -> None:
    done = _run("-y", str(_inventory(tmp_path, bad=True)), "deploy.py")
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert done.returncode == 2
    assert (
        "ms4fleet: error: @fake/gpu-3: serving.gpu_memory_utilisation is not a setting; "
        "did you mean gpu_memory_utilization?"
    ) in out
    # The checkout's config.py validated before pyinfra read the inventory, let alone connected.
    assert "Connecting to hosts" not in out and "Loading inventory" not in out
    assert "Starting operation" not in out and "Detected changes" not in out


def test_the_packaged_deploy_validates_every_host_too(tmp_path: Path) -> None:
    # Outside the checkout there is no config.py: deploy() itself refuses the inventory before any operation.
    done = _run("-y", str(_inventory(tmp_path, bad=True)), "ms4fleet_pyinfra.deploy", cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "ms4fleet: @fake/gpu-3: serving.gpu_memory_utilisation is not a setting" in out
    assert "Starting operation" not in out and "Detected changes" not in out


def test_limit_selects_a_group_or_a_host(tmp_path: Path) -> None:
    inventory = str(_inventory(tmp_path))
    group = _run(inventory, "ms4fleet_pyinfra.deploy", "--dry", "--limit", "h200")
    out = group.stdout + group.stderr
    assert group.returncode == 0, out
    assert "[@fake/gpu-1] to converge" in out and "[@fake/gpu-2] to converge" in out
    assert "@fake/gpu-3" not in out
    one = _run(inventory, "deploy.py", "--dry", "--limit", "@fake/gpu-3")
    out = one.stdout + one.stderr
    assert "[@fake/gpu-3] to converge" in out and "@fake/gpu-1" not in out


def test_the_packaged_deploy_needs_no_checkout(tmp_path: Path) -> None:
    """The same deploy by module name from any directory: the bad host is named before any host is touched."""
    done = _run("-y", str(_inventory(tmp_path, bad=True)), "ms4fleet_pyinfra.deploy", cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "ms4fleet: @fake/gpu-3: serving.gpu_memory_utilisation is not a setting" in out


def test_a_controller_without_rsync_stops_the_run_before_any_operation(tmp_path: Path) -> None:
    """The core's controller preflight runs with the inventory's validation (the sim test proves it on a host)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").symlink_to(str(shutil.which("ssh")))
    done = _run("-y", str(_inventory(tmp_path)), "deploy.py", path=str(bin_dir))
    out = done.stdout + done.stderr
    assert done.returncode != 0
    line = "ms4fleet: controller: rsync not found on PATH (needed for weights staging): install it with `apt-get install rsync`"
    # pyinfra frames it ("--> pyinfra error in FILE line N: ..."); the line itself is said once.
    mentions = [row for row in out.splitlines() if "ms4fleet" in row]
    assert len(mentions) == 1 and mentions[0].endswith(line), out
    assert "Traceback" not in out
    assert "Starting operation" not in out and "Detected changes" not in out
