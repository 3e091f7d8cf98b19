"""What a simulated fleet needs from the controller to serve, for the Ansible engine's sim runs.

The sim inventory carries no weights and the sim hosts cannot pull images, so a sim run adds:

+ ``tiny_weights(root)``: a finalized weights directory of the Mistral Small 4 profile (params.json with the
  model's shape, one small consolidated safetensors file, tekken.json, the core's manifest) to use as a
  ``path`` weights source; the stand-in reads its shape and size, the core's stager moves and verifies it.
+ ``image_archive(root)``: the stand-in image (built and tagged as the production image by the sim) as a
  ``docker save`` archive for the vllm_service role's ``vllm_service_image_archive``.
+ ``extra_vars(root)``: both, as an extra-vars file for ``ansible-playbook -e @FILE``.

``python tests/ansible/simassets.py [ROOT]`` writes them (cached) and prints the extra-vars file's path.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

from ms4fleet.catalog import model_profiles
from ms4fleet.weights.manifest import FileEntry, Manifest, write_manifest

PROFILE = "mistral-small-4-fp8"
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / ".sim" / "ansible-assets"
# Mistral Small 4's shape as its params.json states it (docs: shared/reference/vllm-serving.md section 1).
PARAMS = {
    "dim": 4096,
    "n_layers": 36,
    "n_heads": 32,
    "head_dim": 128,
    "kv_lora_rank": 256,
    "qk_rope_head_dim": 64,
    "vocab_size": 131072,
    "max_position_embeddings": 1048576,
}
FILES = {
    "params.json": json.dumps(PARAMS, indent=2).encode() + b"\n",
    "consolidated-00001-of-00001.safetensors": b"\0" * (1 << 20),
    "tekken.json": json.dumps({"config": {"pattern": "sim"}, "vocab": []}).encode() + b"\n",
}


def tiny_weights(root: Path = DEFAULT_ROOT) -> tuple[Path, str]:
    """A finalized weights directory (files + manifest) and the revision it is pinned at."""
    profile = model_profiles()[PROFILE]
    revision = hashlib.sha1(b"".join(FILES.values())).hexdigest()
    directory = root / "weights" / revision
    entries = []
    for name, blob in FILES.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != blob:
            path.write_bytes(blob)
        entries.append(FileEntry(path=name, size=len(blob), sha256=hashlib.sha256(blob).hexdigest()))
    manifest = Manifest(
        repo=profile.repo_id,
        revision=revision,
        profile=profile.id,
        source="path",
        include=tuple(profile.include_patterns),
        exclude=tuple(profile.exclude_patterns),
        created="2026-11-29T00:00:00+00:00",
        files=tuple(entries),
    )
    write_manifest(directory, manifest)
    return directory, revision


def image_archive(root: Path = DEFAULT_ROOT) -> Path:
    """``docker save`` of the stand-in image (built by the sim, tagged as the production image)."""
    from ms4fleet_sim import standin_image

    tag = standin_image.ensure_image()
    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = root / f"image-{image_id.removeprefix('sha256:')[:12]}.tar"
    if not archive.exists():
        root.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(".partial")
        subprocess.run(["docker", "image", "save", "--output", str(partial), tag], check=True)
        partial.rename(archive)
    for stale in root.glob("image-*.tar"):
        if stale != archive:
            stale.unlink()
    return archive


def extra_vars(root: Path = DEFAULT_ROOT) -> Path:
    weights, revision = tiny_weights(root)
    data = {
        "ms4fleet_weights": {"source": "path", "path": str(weights), "revision": revision},
        "vllm_service_image_archive": str(image_archive(root)),
    }
    path = root / "extra-vars.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(extra_vars(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else DEFAULT_ROOT))
