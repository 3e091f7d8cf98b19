"""The API key ms4fleet generates on the controller for a fleet whose inventory names none.

A host whose ``serving.api_key`` is unset and whose ``serving.open_endpoint`` is not true serves behind
this key: ``secrets.token_urlsafe(32)`` in ``<state dir>/api-key`` (``ms4fleet.statedir``), mode 0600 in a
0700 directory, owned by the controller user. It is one key for the fleets this controller's state
directory deploys (give a fleet its own ``$MS4FLEET_STATE_DIR``, or its own ``serving.api_key``, to keep
keys apart). Both engines upload it to the host's ``/etc/ms4fleet/secrets/api_key`` (root 0600) and read it
back here for their verify gates; ``ms4fleet api-key INVENTORY`` prints it.

+ ``key_path()``: where it lives.
+ ``ensure_key()``: create it once, atomically (O_EXCL, 0600 from its first byte, linked into place only
  when complete; a concurrent run's key wins), and return its path.
+ ``read_key()``: the key, after refusing a file another user owns or others may read (``ApiKeyError``,
  one line naming the file and the fix, never the value).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from ms4fleet.statedir import STATE_ENV, state_dir

KEY_FILE = "api-key"
# 32 random bytes, URL-safe base64: 43 printable ASCII characters, safe in an EnvironmentFile and a header.
KEY_BYTES = 32


class ApiKeyError(ValueError):
    """The generated key cannot be made or read safely; ``str(err)`` is one line without the key."""


def key_path() -> Path:
    return state_dir() / KEY_FILE


def ensure_key() -> Path:
    """The key file, generated now if there is none; raises ``ApiKeyError`` when it cannot be."""
    path = key_path()
    if path.exists():
        read_key(path)
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        # O_EXCL: a file we did not create is never written; 0o600 (umask can only take bits away) and
        # fchmod: the key is never readable by anyone else, not even between creation and the first write.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, f"{secrets.token_urlsafe(KEY_BYTES)}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link(2) fails when the name exists: the first complete key wins, a second run keeps it.
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    except OSError as err:
        raise ApiKeyError(
            f"cannot create the API key file {path}: {err.strerror or err}; set {STATE_ENV} to a "
            "directory this user may write, or reference a key with serving.api_key"
        ) from None
    read_key(path)
    return path


def read_key(path: Path | None = None) -> str:
    """The key in ``path`` (default ``key_path()``), refused unless this user's alone (no group or other bits)."""
    path = path or key_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        raise ApiKeyError(f"cannot read the API key file {path}: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            mode = f"{stat.S_IMODE(info.st_mode):04o}"
            raise ApiKeyError(
                f"the API key file {path} must be a file of this user's alone (now uid {info.st_uid}, mode "
                f"{mode}): chmod 600 {path}, or remove it to have a new key generated"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    key = data.decode("ascii", errors="replace").strip()
    if not key or not key.isprintable() or " " in key:
        raise ApiKeyError(f"the API key file {path} holds no key on one line: remove it to have one generated")
    return key
