"""The image inside a ``docker save`` archive on the controller (air-gapped hosts load it instead of pulling).

+ ``archive_image_id(path)``: ``sha256:…``, the id Docker gives the image once loaded (its config blob's digest),
  read from the archive's manifest.json; the engines load the archive when the host's image has another id.
"""

from __future__ import annotations

import json
import tarfile
from functools import lru_cache
from pathlib import Path


def archive_image_id(path: str) -> str:
    """Raises ValueError (one line) for a file that is not a ``docker save`` archive of exactly one image."""
    stat = Path(path).stat() if Path(path).is_file() else None
    return _image_id(path, stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)


@lru_cache(maxsize=16)
def _image_id(path: str, mtime_ns: int, size: int) -> str:
    # One read per archive version, however many hosts load it.
    try:
        with tarfile.open(path) as archive:
            member = archive.extractfile("manifest.json")
            if member is None:
                raise ValueError("manifest.json is not a file")
            manifest = json.load(member)
    except (OSError, KeyError, tarfile.TarError, ValueError) as err:
        raise ValueError(f"image archive {path}: not a `docker save` archive ({err})") from None
    if len(manifest) != 1:
        raise ValueError(f"image archive {path}: holds {len(manifest)} images, expected exactly one")
    config = str(manifest[0]["Config"]).rsplit("/", 1)[-1].removesuffix(".json")
    return config if config.startswith("sha256:") else f"sha256:{config}"
