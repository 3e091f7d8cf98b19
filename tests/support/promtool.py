"""Debian 12's promtool for tests: the ``prometheus`` package fetched once with ``apt-get download`` (the same
package the monitoring host installs) and unpacked into the sim cache, keyed by the package version."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ms4fleet_sim.cache import build_lock, cache_root


class PromtoolUnavailable(RuntimeError):
    """apt cannot fetch Debian's prometheus package here."""


def _candidate() -> str:
    out = subprocess.run(["apt-cache", "policy", "prometheus"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version and version != "(none)":
                return version
    raise PromtoolUnavailable("apt knows no prometheus package: run apt-get update (Debian 12 sources)")


def promtool() -> Path:
    version = _candidate()
    root = cache_root() / "promtool" / version.replace(":", "_")
    binary = root / "usr" / "bin" / "promtool"
    with build_lock("promtool"):
        if not binary.exists():
            with tempfile.TemporaryDirectory() as tmp:
                done = subprocess.run(
                    ["apt-get", "download", f"prometheus={version}"], cwd=tmp, capture_output=True, text=True
                )
                debs = list(Path(tmp).glob("prometheus_*.deb"))
                if done.returncode != 0 or not debs:
                    raise PromtoolUnavailable(f"apt-get download prometheus failed: {done.stderr.strip()[-300:]}")
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir(parents=True)
                subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
    return binary
