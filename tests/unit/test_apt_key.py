"""The host-side apt key installer: fingerprints as gpg computes them, and a key that is not the pinned one
never reaches the keyring (served over loopback HTTP, as a repository would)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ms4fleet.hostside import apt_key
from tests.conftest import APT_KEYS as KEYS

ED25519 = "534787966B0A38639430D690B7F603BCB55F43C9"
RSA = "FCC2387558F19EEE2BC10776D2D2DB85897D9D3E"


@pytest.mark.parametrize(
    ("name", "fingerprint"), [("ed25519.asc", ED25519), ("rsa3072.asc", RSA), ("rsa3072.gpg", RSA)]
)
def test_fingerprints_are_gpgs(name: str, fingerprint: str) -> None:
    assert apt_key.fingerprints((KEYS / name).read_bytes()) == [fingerprint]


def test_a_keyring_of_two_keys_lists_both() -> None:
    both = (KEYS / "rsa3072.gpg").read_bytes() + apt_key.dearmor((KEYS / "ed25519.asc").read_bytes())
    assert apt_key.fingerprints(both) == [RSA, ED25519]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<html>Not Found</html>", "not an OpenPGP packet header"),
        (b"", "no OpenPGP public key"),
        (b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n-----END PGP PUBLIC KEY BLOCK-----\n", "not valid base64"),
    ],
)
def test_what_is_not_a_key_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(apt_key.NotAKey, match=message):
        apt_key.fingerprints(data)


def test_a_truncated_key_is_refused() -> None:
    with pytest.raises(apt_key.NotAKey, match="past the end"):
        apt_key.fingerprints((KEYS / "rsa3072.gpg").read_bytes()[:200])


def test_the_pinned_key_is_installed_once_and_another_never(
    apt_key_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keyring = tmp_path / "keyrings" / "nvidia.asc"
    # Another key at the URL: refused with one line naming both fingerprints; nothing written.
    assert apt_key.main([f"{apt_key_server}/rsa3072.asc", str(keyring), ED25519]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["changed"] is False and result["fingerprints"] == [RSA]
    assert result["error"] == (
        f"the key at {apt_key_server}/rsa3072.asc has fingerprint {RSA}, not the pinned {ED25519}: not installed"
    )
    assert not keyring.exists()
    # Check mode says it would install the right one, and does not.
    assert apt_key.main([f"{apt_key_server}/ed25519.asc", str(keyring), ED25519, "--check"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True and not keyring.exists()
    # Fingerprints are compared without spaces or case.
    spaced = " ".join(ED25519[i : i + 4] for i in range(0, 40, 4)).lower()
    assert apt_key.main([f"{apt_key_server}/ed25519.asc", str(keyring), spaced]) == 0
    assert json.loads(capsys.readouterr().out) == {"changed": True, "fingerprints": [ED25519], "error": ""}
    assert keyring.read_bytes() == (KEYS / "ed25519.asc").read_bytes()
    assert keyring.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in keyring.parent.iterdir()] == ["nvidia.asc"]  # no temporary file left
    # Installed: nothing is downloaded again (the URL could be gone).
    assert apt_key.main(["https://127.0.0.1:1/gone.asc", str(keyring), ED25519]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False
    # A keyring replaced behind the toolkit's back by another key is not the pinned one: replaced again.
    keyring.write_bytes((KEYS / "rsa3072.asc").read_bytes())
    assert apt_key.main([f"{apt_key_server}/ed25519.asc", str(keyring), ED25519]) == 0
    assert keyring.read_bytes() == (KEYS / "ed25519.asc").read_bytes()


def test_an_unreachable_or_odd_url_is_one_line(tmp_path: Path) -> None:
    result = apt_key.run("http://127.0.0.1:1/key.asc", str(tmp_path / "k.asc"), ED25519, check=False)
    assert result["error"].startswith("the key at http://127.0.0.1:1/key.asc: ") and "\n" not in result["error"]
    assert apt_key.run("ftp://example.org/k.asc", str(tmp_path / "k.asc"), ED25519, check=False)["error"] == (
        "key_url ftp://example.org/k.asc is not https://, http:// or file://"
    )
    # A file on the host is read like a download, and refused alike when it is not a key.
    refused = apt_key.run("file:///etc/passwd", str(tmp_path / "k.asc"), ED25519, check=False)["error"]
    assert refused == "the key at file:///etc/passwd: byte 0 is not an OpenPGP packet header"
    local = apt_key.run((KEYS / "ed25519.asc").as_uri(), str(tmp_path / "k.asc"), ED25519, check=False)
    assert local == {"changed": True, "fingerprints": [ED25519], "error": ""}
