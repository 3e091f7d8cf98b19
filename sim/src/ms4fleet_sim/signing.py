"""The sim's archive signing key (GnuPG), generated once per machine and kept in the cache."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ms4fleet_sim.cache import build_lock, cache_root

UID = "ms4fleet sim archive <archive@sim.ms4fleet.invalid>"
_NO_PASSPHRASE = ("--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "")


def _gpg(home: Path, *args: str) -> bytes:
    proc = subprocess.run(["gpg", "--homedir", str(home), *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args[:2])} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def gpg_home() -> Path:
    """The keyring holding the archive key; created with an ed25519 signing key on first use."""
    home = cache_root() / "gpg"
    with build_lock("gpg"):
        if not (home / "ready").exists():
            home.mkdir(mode=0o700, exist_ok=True)
            os.chmod(home, 0o700)
            _gpg(home, *_NO_PASSPHRASE, "--quick-gen-key", UID, "ed25519", "sign", "never")
            (home / "ready").write_text("ok\n")
    return home


def stop_agent() -> None:
    """Stop the gpg-agent that signing started, so no daemon outlives the build."""
    subprocess.run(
        ["gpgconf", "--homedir", str(cache_root() / "gpg"), "--kill", "gpg-agent"], capture_output=True, check=False
    )


def fingerprint() -> str:
    out = _gpg(gpg_home(), "--batch", "--with-colons", "--list-keys", UID).decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def public_key(armor: bool) -> bytes:
    """The archive key as apt wants it: binary for ``signed-by`` keyrings, armored for a ``.pub`` download."""
    return _gpg(gpg_home(), "--batch", *(("--armor",) if armor else ()), "--export", UID)


def sign_release(release: Path) -> None:
    """Write ``InRelease`` (clearsigned) and ``Release.gpg`` (detached) next to ``release``."""
    home = gpg_home()
    _gpg(
        home,
        *_NO_PASSPHRASE,
        "--local-user",
        UID,
        "--clearsign",
        "-o",
        str(release.with_name("InRelease")),
        str(release),
    )
    _gpg(
        home,
        *_NO_PASSPHRASE,
        "--local-user",
        UID,
        "--armor",
        "--detach-sign",
        "-o",
        str(release.with_name("Release.gpg")),
        str(release),
    )
