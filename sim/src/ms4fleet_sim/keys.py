"""SSH keys of the sim: one client key for the fleet user and one host key per sim host.

Keys are generated with ``cryptography`` (already a paramiko dependency) and kept under ``.sim/`` in the
project root (git-ignored), private keys mode 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def ensure_keypair(path: Path, comment: str) -> str:
    """Create an OpenSSH ed25519 key pair at ``path`` (+ ``.pub``) unless present; return the public line."""
    pub_path = path.with_name(path.name + ".pub")
    if path.exists() and pub_path.exists():
        os.chmod(path, 0o600)
        return pub_path.read_text(encoding="utf-8").strip()
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {comment}"
    _write_private(path, private)
    pub_path.write_text(line + "\n", encoding="utf-8")
    return line
