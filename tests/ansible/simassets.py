"""What a simulated fleet needs from the controller to serve, for the Ansible engine's sim runs.

The sim inventory carries no weights and the sim hosts cannot pull images, so a sim run adds:

+ ``weights(root)``: the sim's synthetic Mistral Small 4 checkpoint (``ms4fleet_sim.weights_mirror``: params.json
  with the model's shape, small consolidated safetensors, tekken.json, the core's manifest) as a finalized
  weights directory, used as a ``path`` source at the sim's pinned revision (the one the pyinfra engine's
  sim runs use through the loopback mirror, so both engines render the same units);
+ ``image_archive(root)``: the stand-in image (built and tagged as the production image by the sim) as a
  ``docker save`` archive for the vllm_service role's ``vllm_service_image_archive``;
+ ``extra_vars(root)``: both, as an extra-vars file for ``ansible-playbook -e @FILE``.

``python tests/ansible/simassets.py [ROOT]`` writes them (cached) and prints the extra-vars file's path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ms4fleet_sim import standin_image
from ms4fleet_sim.weights_mirror import SIM_REVISION, build_tree

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / ".sim" / "ansible-assets"


def weights(root: Path = DEFAULT_ROOT) -> tuple[Path, str]:
    """A finalized weights directory (files + manifest) and the revision it is pinned at."""
    return build_tree(root / "weights"), SIM_REVISION


def image_archive(root: Path = DEFAULT_ROOT) -> Path:
    """``docker save`` of the stand-in image (rewritten when the image or its tag changes)."""
    return standin_image.save_archive(root / "vllm-image.tar")


def extra_vars(root: Path = DEFAULT_ROOT) -> Path:
    directory, revision = weights(root)
    data = {
        "ms4fleet_weights": {"source": "path", "path": str(directory), "revision": revision},
        "vllm_service_image_archive": str(image_archive(root)),
    }
    path = root / "extra-vars.yml"
    text = yaml.safe_dump(data, sort_keys=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


if __name__ == "__main__":
    print(extra_vars(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else DEFAULT_ROOT))
