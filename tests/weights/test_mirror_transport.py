"""Mirrors over the wire: https with a CA made here (loopback only), the manifest pinned by sha256, plain http
refused unless the inventory allows it, and a redirect from https down to http refused."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ms4fleet.catalog import model_profiles
from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.weights.errors import SourceError, WeightsError
from ms4fleet.weights.fetch import fetch_weights
from ms4fleet.weights.mirror import MirrorSource
from ms4fleet.weights.request import by_files, mirror_for, open_source, request_for_host
from ms4fleet.weights.source import Source
from ms4fleet_sim import weights_mirror

PROFILE = model_profiles()["mistral-small-4-fp8"]
REVISION = weights_mirror.SIM_REVISION


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA (certificate only is kept for clients) and a 127.0.0.1 server certificate it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("ms4fleet test CA"))
        .issuer_name(_name("ms4fleet test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_pem, cert_pem, key_pem


class _Handler(SimpleHTTPRequestHandler):
    """The mirror tree; ``/down/<path>`` redirects to the same path on the plain-http mirror."""

    plain_url = ""

    def do_GET(self) -> None:
        if self.path.startswith("/down/"):
            self.send_response(302)
            self.send_header("Location", self.plain_url + self.path[len("/down") :])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@dataclass
class Mirrors:
    https: str
    http: str
    ca: Path
    manifest_sha256: str


@pytest.fixture
def mirrors(tmp_path: Path) -> Iterator[Mirrors]:
    root = tmp_path / "tree"
    tree = weights_mirror.build_tree(root, revision=REVISION)
    ca, cert, key = _tls_files(tmp_path)
    plain = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    plain_url = f"http://127.0.0.1:{plain.server_address[1]}"
    handler = type("Handler", (_Handler,), {"plain_url": plain_url})
    secure = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (plain, secure)]
    for thread in threads:
        thread.start()
    try:
        digest = hashlib.sha256((tree / ".ms4fleet" / "manifest.json").read_bytes()).hexdigest()
        yield Mirrors(f"https://127.0.0.1:{secure.server_address[1]}", plain_url, ca, digest)
    finally:
        for server in (plain, secure):
            server.shutdown()
            server.server_close()


@pytest.fixture
def trusted(mirrors: Mirrors, monkeypatch: pytest.MonkeyPatch) -> Mirrors:
    """The test CA trusted the way a host trusts an internal CA (OpenSSL's default CA file)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(mirrors.ca))
    return mirrors


def _fetch(source: Source, dest: Path) -> None:
    fetch_weights(source, dest, profile=PROFILE.id, include=PROFILE.include_patterns, exclude=PROFILE.exclude_patterns)


def _host(**weights: Any) -> HostConfig:
    data = {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 8}, "ms4fleet_weights": {"source": "mirror", **weights}}
    return HostConfig.from_host_data("gpu-1", data)


def test_https_mirror_with_the_pinned_manifest_fetches(trusted: Mirrors, tmp_path: Path) -> None:
    config = _host(mirror_url=trusted.https, revision=REVISION, manifest_sha256=trusted.manifest_sha256)
    source, _secret = open_source(request_for_host(config))
    _fetch(source, tmp_path / "dest")
    assert sorted(p.name for p in (tmp_path / "dest").glob("*.safetensors"))


def test_a_manifest_other_than_the_pinned_one_stops_with_one_line(trusted: Mirrors, tmp_path: Path) -> None:
    source = MirrorSource(trusted.https, PROFILE.repo_id, REVISION, manifest_sha256="0" * 64)
    with pytest.raises(SourceError) as err:
        _fetch(source, tmp_path / "dest")
    message = str(err.value)
    assert "\n" not in message and f"not the pinned weights.manifest_sha256 {'0' * 64}" in message
    assert trusted.manifest_sha256 in message
    assert not list(tmp_path.glob("dest*/*.safetensors"))


def test_an_untrusted_certificate_is_refused(mirrors: Mirrors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    with pytest.raises(SourceError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        _fetch(MirrorSource(mirrors.https, PROFILE.repo_id, REVISION), tmp_path / "dest")


def test_plain_http_is_refused_unless_the_inventory_allows_it(mirrors: Mirrors, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _host(mirror_url=mirrors.http, revision=REVISION)
    assert "gpu-1" in str(err.value) and "weights.mirror_url" in str(err.value)
    assert "allow_insecure: true" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="allow_insecure"):
        _host(mirror_url=mirrors.http, revision=REVISION, allow_insecure="yes please")
    # The source refuses it too, for a caller that skipped the config.
    with pytest.raises(SourceError, match="plain http, refused"):
        _fetch(MirrorSource(mirrors.http, PROFILE.repo_id, REVISION), tmp_path / "refused")
    allowed = _host(mirror_url=mirrors.http, revision=REVISION, allow_insecure=True)
    source, _secret = open_source(request_for_host(allowed))
    _fetch(source, tmp_path / "dest")
    assert list((tmp_path / "dest").glob("*.safetensors"))


def test_a_redirect_from_https_down_to_http_is_refused(trusted: Mirrors, tmp_path: Path) -> None:
    source = MirrorSource(f"{trusted.https}/down", PROFILE.repo_id, REVISION)
    with pytest.raises(SourceError, match=r"redirects to plain http \(http://127\.0\.0\.1:\d+/"):
        _fetch(source, tmp_path / "dest")


def test_an_explicit_request_for_an_http_mirror_is_refused() -> None:
    request = request_for_host(_host(mirror_url="https://mirror.example", revision=REVISION, manifest_sha256="ab" * 32))
    with pytest.raises(WeightsError, match="plain http"):
        replace(request, mirror_url="http://mirror.example")


def test_an_unpinned_mirror_manifest_is_refused_unless_the_inventory_allows_it(
    trusted: Mirrors, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        _host(mirror_url=trusted.https, revision=REVISION)
    message = str(err.value)
    url = f"{trusted.https}/{PROFILE.repo_id}/{REVISION}/.ms4fleet/manifest.json"
    assert message.startswith("gpu-1: weights.manifest_sha256 is required") and "\n" not in message
    assert url in message and "sha256sum" in message and "allow_insecure: true" in message
    # An explicit request (the CLI's) is held to the same rule.
    pinned = request_for_host(
        _host(mirror_url=trusted.https, revision=REVISION, manifest_sha256=trusted.manifest_sha256)
    )
    with pytest.raises(WeightsError, match=r"manifest_sha256 is required .*--manifest-sha256"):
        replace(pinned, manifest_sha256=None)
    # allow_insecure trusts the mirror unpinned: the files still verify against its manifest.
    source, _secret = open_source(
        request_for_host(_host(mirror_url=trusted.https, revision=REVISION, allow_insecure=True))
    )
    _fetch(source, tmp_path / "dest")
    assert list((tmp_path / "dest").glob("*.safetensors"))


def test_requests_that_take_the_same_files_form_one_group_in_inventory_order() -> None:
    """One fetch (or one peer tree) per group: the destination and owner do not split a group, the revision does."""
    a = request_for_host(_host(mirror_url="https://mirror.example", revision=REVISION, manifest_sha256="ab" * 32))
    moved = replace(a, dest="/srv/elsewhere", owner="nobody")
    other = replace(a, revision="c" * 40)
    hosts = [("h1", a), ("h2", other), ("h3", moved), ("h4", a)]
    groups = by_files(hosts, lambda pair: pair[1])
    assert [[name for name, _ in group] for group in groups] == [["h1", "h3", "h4"], ["h2"]]
    assert mirror_for(a).manifest_sha256 == "ab" * 32
