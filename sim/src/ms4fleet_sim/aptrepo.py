"""The sim's apt repositories, served over HTTP inside the fleet's own Docker network.

Three flat repositories (``deb URL ./``, the layout of NVIDIA's CUDA repository) live in one directory:

- ``nvidia/``: the simulated NVIDIA packages, signed (InRelease + Release.gpg) with the sim archive key,
  which is also published there as ``ms4fleet-sim.pub`` (armored) like NVIDIA's ``3bf863cc.pub``;
- ``nvidia-unsigned/``: the same packages without signatures, to prove apt refuses an unsigned repo;
- ``debian/``: an offline Debian mirror of what hosts may install beyond the base image (docker.io and its
  dependencies, python3-apt for Ansible's apt module, prometheus for a monitoring host, nginx for the host
  proxy), downloaded once with apt inside the host image so it is exactly the closure a host needs; signed
  with the same key.

The directory is cached by a hash of its recipe; a small container (``python3 -m http.server`` on the host
image) serves it read-only as ``http://ms4fleet-sim-repo/`` on the fleet network. Converges therefore never
leave the machine and always see the same package set.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from ms4fleet_sim import dockercli, packages, signing
from ms4fleet_sim.cache import build_lock, cache_root, package_sources_hash, recipe_hash

REPO_ALIAS = "ms4fleet-sim-repo"
BASE_URL = f"http://{REPO_ALIAS}"
NVIDIA_URL = f"{BASE_URL}/nvidia/"
NVIDIA_UNSIGNED_URL = f"{BASE_URL}/nvidia-unsigned/"
DEBIAN_URL = f"{BASE_URL}/debian/"
KEY_NAME = "ms4fleet-sim.pub"
KEY_URL = f"{NVIDIA_URL}{KEY_NAME}"

# What hosts may apt-get install from Debian without the internet (closure computed against the host image);
# prometheus is Debian's own package, as ms4fleet.monitoring installs it on a real monitoring host; nginx is
# the host proxy every GPU host runs in front of vLLM (ms4fleet.proxy).
DEBIAN_PACKAGES = ("docker.io", "python3-apt", "prometheus", "nginx")


def _scan_packages(repo: Path) -> None:
    proc = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=repo, capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dpkg-scanpackages failed in {repo}: {proc.stderr.decode(errors='replace')}")
    (repo / "Packages").write_bytes(proc.stdout)
    (repo / "Packages.gz").write_bytes(gzip.compress(proc.stdout, mtime=0))


def _write_release(repo: Path, label: str) -> Path:
    lines = [
        "Origin: ms4fleet-sim",
        f"Label: {label}",
        "Architectures: amd64 all",
        f"Date: {format_datetime(datetime.now(UTC), usegmt=True)}",
    ]
    files = [repo / "Packages", repo / "Packages.gz"]
    for field, algo in (("MD5Sum", hashlib.md5), ("SHA256", hashlib.sha256)):
        lines.append(f"{field}:")
        for path in files:
            data = path.read_bytes()
            lines.append(f" {algo(data).hexdigest()} {len(data)} {path.name}")
    release = repo / "Release"
    release.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return release


def write_index(repo: Path, label: str, signed: bool) -> None:
    """Packages, Release and (when ``signed``) InRelease + Release.gpg for a flat repository."""
    _scan_packages(repo)
    release = _write_release(repo, label)
    if signed:
        signing.sign_release(release)


def _download_debian(host_image: str, dest: Path) -> None:
    """apt-get --download-only inside the host image: exactly the .debs a fresh host lacks."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "partial").mkdir(exist_ok=True)
    script = (
        "set -e; apt-get update -qq; "
        f"apt-get install -y -qq --download-only -o Dir::Cache::archives=/out {' '.join(DEBIAN_PACKAGES)}"
    )
    dockercli.run(
        ["run", "--rm", "-v", f"{dest}:/out", "--label", f"{dockercli.LABEL}=build", host_image, "sh", "-c", script],
        timeout=1200,
    )
    shutil.rmtree(dest / "partial", ignore_errors=True)
    for leftover in dest.glob("lock"):
        leftover.unlink()


def debian_mirror(host_image: str) -> Path:
    """The cached offline Debian .debs for ``host_image`` (downloaded on first use)."""
    path = cache_root() / "debian-debs" / recipe_hash(host_image, DEBIAN_PACKAGES)
    with build_lock("debian-debs"):
        if not (path / ".complete").exists():
            shutil.rmtree(path, ignore_errors=True)
            _download_debian(host_image, path)
            (path / ".complete").write_text("ok\n")
    return path


def repo_hash(host_image: str) -> str:
    return recipe_hash(
        "repo", host_image, DEBIAN_PACKAGES, packages.recipe(), package_sources_hash("nvsim"), signing.fingerprint()
    )


def ensure_repo(host_image: str, log: list[str] | None = None) -> Path:
    """Build (once per recipe) the directory served to hosts; return it."""
    root = cache_root() / "repos" / repo_hash(host_image)
    if (root / ".complete").exists():
        return root
    debs = debian_mirror(host_image)
    with build_lock("repo"):
        if (root / ".complete").exists():
            return root
        if log is not None:
            log.append(f"building the sim apt repository {root.name}")
        root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root.parent, prefix=".build-") as tmp:
            staging = Path(tmp) / "repo"
            nvidia = staging / "nvidia"
            unsigned = staging / "nvidia-unsigned"
            debian = staging / "debian"
            for path in (nvidia, unsigned, debian):
                path.mkdir(parents=True)
            for deb in packages.build_all(nvidia):
                (unsigned / deb.name).hardlink_to(deb)
            for deb in sorted(debs.glob("*.deb")):
                (debian / deb.name).hardlink_to(deb)
            (nvidia / KEY_NAME).write_bytes(signing.public_key(armor=True))
            try:
                write_index(nvidia, "ms4fleet-sim nvidia", signed=True)
                write_index(unsigned, "ms4fleet-sim nvidia unsigned", signed=False)
                write_index(debian, "ms4fleet-sim debian", signed=True)
            finally:
                signing.stop_agent()
            (staging / ".complete").write_text("ok\n")
            staging.chmod(0o755)
            staging.rename(root)
    return root
