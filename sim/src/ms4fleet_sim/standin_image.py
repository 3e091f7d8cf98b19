"""The vLLM stand-in image: a slim Debian rootfs (no systemd) + ``ms4fleet_sim.standin`` + a ``vllm`` launcher.

Like the real ``vllm/vllm-openai`` image its ENTRYPOINT is ``["vllm", "serve"]``, so the production unit's
``docker run ... IMAGE MODEL --flags`` runs unchanged. It is tagged with the production image name the sim
core names by default (``STANDIN_IMAGE``). Hosts get it from the sim fleet's registry (``services``), from a
``docker save`` archive (``save_archive``, the air-gapped path) or straight into their nested dockerd with
``docker save | docker exec -i HOST docker load`` (``load_into``), skipped when the host already has it.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from ms4fleet_sim import dockercli, hostimage
from ms4fleet_sim.cache import build_lock, cache_root, image_namespace, package_sources_hash, recipe_hash

# The core's default image and vLLM version: the stand-in takes the production name, so units run unchanged.
STANDIN_IMAGE = "vllm/vllm-openai:v0.32.0"
STANDIN_VLLM_VERSION = "0.32.0"

SLIM_PACKAGES = ("python3", "ca-certificates")
INSTALL_ROOT = "/opt/ms4fleet-standin"
LAUNCHER = (
    "#!/usr/bin/python3\n"
    '"""vllm CLI of the ms4fleet sim stand-in: `vllm serve MODEL [flags]`."""\n'
    "import runpy\n"
    "import sys\n"
    f"sys.path.insert(0, {INSTALL_ROOT!r})\n"
    'runpy.run_module("ms4fleet_sim.standin", run_name="__main__", alter_sys=True)\n'
)
CHANGES = (
    'ENTRYPOINT ["vllm", "serve"]',
    "CMD []",
    "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HOME=/root/.cache/huggingface",
    "EXPOSE 8000",
)
SUBPACKAGES = ("nvsim", "standin")


def _slim_tar() -> Path:
    """A cached tarball of Debian minbase + python3 (the stand-in needs nothing else)."""
    path = cache_root() / f"standin-rootfs-{recipe_hash(hostimage.SUITE, hostimage.MIRROR, SLIM_PACKAGES)}.tar"
    with build_lock("standin-rootfs"):
        if path.exists():
            return path
        with tempfile.TemporaryDirectory(dir=cache_root(), prefix="rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            hostimage.bootstrap_rootfs(rootfs, SLIM_PACKAGES)
            cleanup = "apt-get clean; rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /var/log/*.log"
            subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", cleanup], check=True, capture_output=True)
            partial = path.with_suffix(".partial")
            subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
            partial.rename(path)
    return path


def _code_files() -> dict[str, bytes]:
    """The ms4fleet_sim files the image needs: the package root, nvsim (GPU state) and the stand-in."""
    base = Path(str(resources.files("ms4fleet_sim")))
    files = {"ms4fleet_sim/__init__.py": (base / "__init__.py").read_bytes()}
    for sub in SUBPACKAGES:
        for path in sorted((base / sub).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".json"):
                files[str(path.relative_to(base.parent))] = path.read_bytes()
    return files


def image_tag() -> str:
    digest = recipe_hash("standin", SLIM_PACKAGES, LAUNCHER, CHANGES, package_sources_hash(*SUBPACKAGES))
    return f"{image_namespace()}/standin:{digest}"


def _image_stream(base_tar: Path, code: dict[str, bytes]) -> bytes:
    """The slim rootfs with the code and launcher appended, as one tar for ``docker import``."""
    buffer = io.BytesIO(base_tar.read_bytes())
    with tarfile.open(fileobj=buffer, mode="a") as tar:
        directories = sorted({str(Path(name).parent) for name in code} | {"ms4fleet_sim"})
        for directory in directories:
            info = tarfile.TarInfo(f".{INSTALL_ROOT}/{directory}")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, blob in sorted(code.items()):
            info = tarfile.TarInfo(f".{INSTALL_ROOT}/{name}")
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
        launcher = LAUNCHER.encode()
        info = tarfile.TarInfo("./usr/local/bin/vllm")
        info.size, info.mode = len(launcher), 0o755
        tar.addfile(info, io.BytesIO(launcher))
    return buffer.getvalue()


def ensure_image(log: Callable[[str], None] | None = None) -> str:
    """Build the stand-in image for the current sources (cached) and tag it as the production image."""
    tag = image_tag()
    if not dockercli.image_exists(tag):
        with build_lock("standin-image"):
            if not dockercli.image_exists(tag):
                if log is not None:
                    log(f"building {tag}")
                stream = _image_stream(_slim_tar(), _code_files())
                args = ["import"]
                for change in CHANGES:
                    args += ["--change", change]
                args += ["--change", f"LABEL {dockercli.LABEL}=standin-image"]
                dockercli.run([*args, "-", tag], input_bytes=stream, timeout=600)
    dockercli.run(["tag", tag, STANDIN_IMAGE])
    return STANDIN_IMAGE


def load_into(container: str, image: str = STANDIN_IMAGE) -> bool:
    """Load ``image`` into the nested dockerd of sim host ``container``; False when it was already there."""
    wanted = dockercli.out(["image", "inspect", "--format", "{{.Id}}", image])
    present = dockercli.exec_in(container, ["docker", "image", "inspect", "--format", "{{.Id}}", image], check=False)
    if present.returncode == 0 and present.stdout.decode().strip() == wanted:
        return False
    probe = dockercli.exec_in(container, ["docker", "version", "--format", "{{.Server.Version}}"], check=False)
    if probe.returncode != 0:
        raise RuntimeError(
            f"{container}: no running Docker engine to load {image} into (install docker.io on the host first)"
        )
    dockercli.pipe(["save", image], ["exec", "-i", container, "docker", "load"])
    return True


def save_archive(path: Path) -> Path:
    """The stand-in image as a ``docker save`` archive at ``path``, for hosts without a registry (the engines'
    image archive setting). Rewritten only when the image or the tag it carries changed (``path.id`` records
    both: the hosts' dockerd knows the image by that tag)."""
    image = ensure_image()
    stamp = path.with_suffix(".id")
    key = f"{dockercli.out(['image', 'inspect', '--format', '{{.Id}}', image])} {image}"
    # Parallel test workers ask for the same archive: one writes it, the others then find it current.
    with build_lock("standin-archive"):
        if not path.exists() or not stamp.exists() or stamp.read_text() != key:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            dockercli.run(["save", "-o", str(partial), image], timeout=600)
            partial.rename(path)
            stamp.write_text(key)
    return path
