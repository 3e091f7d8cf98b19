#!/usr/bin/env python3
"""An apt repository key, installed only when it is the key the inventory pins by fingerprint.

Engines run this single standard-library file (Python 3.8+) on the host, as root:

    apt_key.py URL KEYRING FINGERPRINT [--check]

If KEYRING already holds a primary key with FINGERPRINT, nothing happens. Otherwise the key at URL is
downloaded (https, plain http or a file:// path on the host: the fingerprint is the trust anchor either
way, and apt checks it again through the sources file's Signed-By), its OpenPGP primary keys are read,
and only when one of them has FINGERPRINT does it replace KEYRING (0644, atomically); a key without it is
never written. ``--check``
reports what would happen and changes nothing. One JSON object on stdout:
``{"changed": bool, "fingerprints": [...], "error": "..."}``; exit 0, or 1 with ``error`` set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import sys
import tempfile
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

MAX_BYTES = 1024 * 1024  # an apt key is a few KiB; anything this large is not one
TIMEOUT_S = 60
ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"
PUBLIC_KEY = 6  # OpenPGP packet tag of a primary public key (RFC 4880 section 5.5.1.1)


class NotAKey(ValueError):
    """The bytes are not an OpenPGP public key this script can read."""


def dearmor(data: bytes) -> bytes:
    """ASCII-armored key -> its binary packets; binary input is returned as it is."""
    text = data.decode("ascii", errors="replace")
    if ARMOR_BEGIN not in text:
        return data
    body = text.split(ARMOR_BEGIN, 1)[1].split(ARMOR_END, 1)[0]
    lines = body.strip("\r\n").splitlines()
    # Armor headers ("Version: ...") end at the first blank line; the CRC line starts with "=".
    if any(not line.strip() for line in lines):
        lines = lines[next(i for i, line in enumerate(lines) if not line.strip()) + 1 :]
    payload = "".join(line.strip() for line in lines if line.strip() and not line.startswith("="))
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise NotAKey("the armored key is not valid base64 (%s)" % err) from None


def packets(data: bytes) -> List[Tuple[int, bytes]]:
    """OpenPGP packets (tag, body), old and new header formats."""
    out = []
    pos = 0
    while pos < len(data):
        first = data[pos]
        if not first & 0x80:
            raise NotAKey("byte %d is not an OpenPGP packet header" % pos)
        if first & 0x40:  # new format
            tag = first & 0x3F
            pos += 1
            if pos >= len(data):
                raise NotAKey("truncated packet header")
            octet = data[pos]
            if octet < 192:
                length, pos = octet, pos + 1
            elif octet < 224:
                if pos + 1 >= len(data):
                    raise NotAKey("truncated packet length")
                length, pos = ((octet - 192) << 8) + data[pos + 1] + 192, pos + 2
            elif octet == 255:
                length, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
            else:
                raise NotAKey("partial body lengths do not occur in keys")
        else:  # old format
            tag = (first >> 2) & 0x0F
            kind = first & 0x03
            pos += 1
            if kind == 3:
                length = len(data) - pos
            else:
                size = (1, 2, 4)[kind]
                length, pos = int.from_bytes(data[pos : pos + size], "big"), pos + size
        if pos + length > len(data):
            raise NotAKey("a packet runs past the end of the key")
        out.append((tag, data[pos : pos + length]))
        pos += length
    return out


def fingerprints(data: bytes) -> List[str]:
    """The fingerprints of the primary keys in ``data`` (v4: SHA-1 of 0x99, length, key body), upper case."""
    out = []
    for tag, body in packets(dearmor(data)):
        if tag != PUBLIC_KEY:
            continue
        if not body or body[0] != 4:
            raise NotAKey("primary key of version %s: only version 4 keys are read" % (body[:1].hex() or "?"))
        # SHA-1 is what a v4 fingerprint is (RFC 4880 12.2), not a choice made here.
        digest = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest()
        out.append(digest.upper())
    if not out:
        raise NotAKey("no OpenPGP public key in it")
    return out


def download(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "ms4fleet-apt-key"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        data: bytes = response.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise NotAKey("more than %d bytes: not an apt key" % MAX_BYTES)
    return data


def install(keyring: str, data: bytes) -> None:
    """Write ``data`` to ``keyring`` (0644) through a temporary file in the same directory."""
    directory = os.path.dirname(keyring) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=directory, prefix=".ms4fleet-key-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, keyring)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def current(keyring: str) -> List[str]:
    """Fingerprints in the installed keyring (none when it is missing or unreadable as a key)."""
    try:
        with open(keyring, "rb") as handle:
            return fingerprints(handle.read(MAX_BYTES))
    except (OSError, NotAKey):
        return []


def run(url: str, keyring: str, fingerprint: str, check: bool) -> Dict[str, Any]:
    wanted = fingerprint.replace(" ", "").upper()
    installed = current(keyring)
    if wanted in installed:
        return {"changed": False, "fingerprints": installed, "error": ""}
    if not url.startswith(("https://", "http://", "file://")):
        return {"changed": False, "fingerprints": [], "error": "key_url %s is not https://, http:// or file://" % url}
    try:
        data = download(url)
        found = fingerprints(data)
    except (OSError, NotAKey) as err:
        return {"changed": False, "fingerprints": [], "error": "the key at %s: %s" % (url, err)}
    if wanted not in found:
        return {
            "changed": False,
            "fingerprints": found,
            "error": "the key at %s has fingerprint %s, not the pinned %s: not installed"
            % (url, ", ".join(found), wanted),
        }
    if not check:
        install(keyring, data)
    return {"changed": True, "fingerprints": found, "error": ""}


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    if len(args) != 3:
        sys.stderr.write("usage: apt_key.py URL KEYRING FINGERPRINT [--check]\n")
        return 2
    result = run(args[0], args[1], args[2], check)
    json.dump(result, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 1 if result["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
