"""Typed, checked strings for inventory fields, by where they land (unit file, shell, apt source, docker
argument, host path): each type's pattern is anchored (``\\A...\\Z``) and no type admits a control,
format or line-separator character.

+ ``Text``: any single-line string (Environment= values, extra_args words).
+ ``HostPath`` / ``DataDir``: absolute, normalised host paths; a ``DataDir`` is also outside system trees.
+ ``ImageRef``, ``HttpUrl``, ``AptUrl``, ``AptSuite``, ``AptComponent``, ``KeyFingerprint``, ``UserName``,
  ``Size``, ...
+ ``Network``: an IPv4/IPv6 network in canonical CIDR form (nginx ``allow``).
+ ``image_version("vllm/vllm-openai:v0.32.0")`` -> ``"0.32.0"``: the vLLM release an image tag names, or None.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from ms4fleet.escape import unsafe_char

_MAX_TEXT = 4096
_PATH = re.compile(r"\A/[A-Za-z0-9._@+/-]*\Z")
# Trees a weights directory must never be, nor sit under: ms4fleet writes, renames and removes there.
_SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/snap",
    "/sys",
    "/usr",
    "/var/lib/apt",
    "/var/lib/dpkg",
    "/var/lib/systemd",
    "/var/log",
    "/var/run",
)
# Shared roots a weights directory may sit under but never be.
_SHARED_ROOTS = frozenset(
    {"/", "/home", "/media", "/mnt", "/opt", "/srv", "/tmp", "/var", "/var/cache", "/var/lib", "/var/tmp"}
)
# Docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest].
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"\A(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?\Z"
)
_HOSTNAME = re.compile(r"\A[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\Z")
_TAG_VERSION = re.compile(r"\Av?(\d+\.\d+\.\d+)(?:\Z|[^0-9])")
_URL = re.compile(r"\A[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+\Z")
_SUITE = re.compile(r"\A[A-Za-z0-9._~+/-]{1,100}\Z")
_FINGERPRINT = re.compile(r"\A[0-9A-F]{40}\Z")
_COMPONENT_NAME = re.compile(r"\A[A-Za-z0-9._+-]{1,100}\Z")
# Debian's adduser NAME_REGEX, without its optional trailing '$' (machine accounts).
_USER = re.compile(r"\A[a-z_][a-z0-9_-]{0,31}\Z")
# uid 0 under another name, and Debian's static system accounts (base-passwd): a service must not share them.
_RESERVED_USERS = frozenset(
    {
        *("root", "toor", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy"),
        *("www-data", "backup", "list", "irc", "gnats", "nobody", "_apt", "messagebus", "sshd", "syslog"),
        *("systemd-network", "systemd-resolve", "systemd-timesync", "docker"),
    }
)
# Docker's RAMInBytes: a number, an optional unit, an optional i and b (64g, 16GB, 1.5GiB).
_SIZE = re.compile(r"\A[0-9]{1,16}(?:\.[0-9]{1,6})?[kKmMgGtTpP]?[iI]?[bB]?\Z")
_TOKEN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_SHA256_HEX = re.compile(r"\A[0-9a-f]{64}\Z")
_SERVED_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}\Z")
_BACKEND = re.compile(r"\A[A-Za-z0-9_]{1,64}\Z")
ENV_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_VERSION = re.compile(r"\A\d{1,4}\.\d{1,4}\.\d{1,4}(?:[.+-][0-9A-Za-z.]{1,64})?\Z")
_DRIVER_VERSION = re.compile(r"\A\d{3}\.\d{1,3}(?:\.\d{1,3})?\Z")
_CUDA_TOOLKIT = re.compile(r"\A\d{1,2}-\d{1,2}\Z")
# An apt version series: upstream MAJOR[.MINOR[.PATCH]] and every release under it ("27.5.*").
_PACKAGE_SERIES = re.compile(r"\A\d{1,4}(?:\.\d{1,4}){0,2}\.\*\Z")


def text(value: str) -> str:
    bad = unsafe_char(value)
    if bad is not None:
        raise ValueError(f"holds {bad}: values reach unit files, shells and argv; remove it")
    if len(value) > _MAX_TEXT:
        raise ValueError(f"is {len(value)} characters long: at most {_MAX_TEXT}")
    return value


def _pattern(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        text(value)
        if not regex.match(value):
            raise ValueError(f"is not {what}")
        return value

    return AfterValidator(check)


def host_path(value: str) -> str:
    text(value)
    if not value.startswith("/"):
        raise ValueError("must be an absolute path on the host")
    trimmed = value.rstrip("/") or "/"
    if not _PATH.match(trimmed):
        raise ValueError("may hold only letters, digits and . _ @ + - / (it reaches unit files, shells and docker -v)")
    if "//" in trimmed or posixpath.normpath(trimmed) != trimmed:
        raise ValueError("is not normalised: write it without //, . or .. components")
    return trimmed


def data_dir(value: str) -> str:
    path = host_path(value)
    if path in _SHARED_ROOTS:
        raise ValueError("is a shared system directory: name a directory of its own, e.g. /srv/ms4fleet")
    for tree in _SYSTEM_TREES:
        if path == tree or path.startswith(f"{tree}/"):
            raise ValueError(f"is inside the system tree {tree}: keep weights under e.g. /srv/ms4fleet")
    return path


def image_ref(value: str) -> str:
    text(value)
    found = _IMAGE.match(value)
    if not found:
        raise ValueError("is not a container image reference (registry/name:tag or name@sha256:<64 hex>)")
    if not found["digest"] and found["tag"] in {None, "latest"}:
        raise ValueError("is not pinned: name a release tag (vllm/vllm-openai:v0.32.0) or a digest (@sha256:...)")
    return value


def image_version(image: str) -> str | None:
    """The release an image's tag names (``v0.32.0`` -> ``0.32.0``), None for a digest-only or other tag."""
    found = _IMAGE.match(image)
    tag = found["tag"] if found else None
    version = _TAG_VERSION.match(tag) if tag else None
    return version[1] if version else None


def _url(schemes: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        text(value)
        if not _URL.match(value):
            raise ValueError("is not a URL: spaces, quotes and non-ASCII characters must be %-encoded")
        parts = urlsplit(value)
        if parts.scheme not in schemes or (parts.scheme != "file" and not parts.hostname):
            raise ValueError(f"must be a {' or '.join(s + '://' for s in schemes)} URL with a host")
        return value

    return AfterValidator(check)


def network(value: str) -> str:
    """A network in canonical CIDR form (``10.0.0.0/8``, ``127.0.0.1/32``, ``fd00::/8``): what nginx ``allow`` takes."""
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(
            "is not a network in CIDR form with its host bits zero (e.g. 10.0.0.0/8 or 192.0.2.7/32)"
        ) from None
    if str(net) != value:
        raise ValueError(f"is not written canonically: write {str(net)!r}")
    return value


def peer_address(value: str) -> str:
    """An address other hosts reach a host at: an IP address or a DNS name (letters, digits, dots, hyphens)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if len(value) > 253 or not _HOSTNAME.match(value):
            raise ValueError("is not an IP address or a host name (letters, digits, '.', '-')") from None
    return value


def key_fingerprint(value: str) -> str:
    """An OpenPGP v4 fingerprint as gpg prints it (spaces and case ignored) -> 40 upper-case hex digits."""
    text(value)
    compact = value.replace(" ", "").upper()
    if not _FINGERPRINT.match(compact):
        raise ValueError("is not an OpenPGP key fingerprint: 40 hex digits, as `gpg --show-keys KEYFILE` prints it")
    return compact


def user_name(value: str) -> str:
    text(value)
    if not _USER.match(value):
        raise ValueError("is not a valid user name (lower-case letters, digits, _ and -; at most 32)")
    if value in _RESERVED_USERS:
        raise ValueError("is a system account: vLLM must run as its own unprivileged user, e.g. ms4fleet")
    return value


Text = Annotated[str, AfterValidator(text)]
HostPath = Annotated[str, AfterValidator(host_path)]
DataDir = Annotated[str, AfterValidator(data_dir)]
ImageRef = Annotated[str, AfterValidator(image_ref)]
HttpUrl = Annotated[str, _url(("http", "https"))]
AptUrl = Annotated[str, _url(("http", "https", "file"))]
AptSuite = Annotated[str, _pattern(_SUITE, "an apt suite (letters, digits, . _ ~ + - /)")]
AptComponent = Annotated[str, _pattern(_COMPONENT_NAME, "an apt component (letters, digits, . _ + -)")]
KeyFingerprint = Annotated[str, AfterValidator(key_fingerprint)]
UserName = Annotated[str, AfterValidator(user_name)]
Size = Annotated[str, _pattern(_SIZE, "a size such as 16g, 64GB or 1.5GiB")]
Token = Annotated[str, _pattern(_TOKEN, "a name of letters, digits, . _ - (at most 128)")]
Sha256 = Annotated[str, _pattern(_SHA256_HEX, "a sha256 digest: 64 lowercase hex digits")]
ServedName = Annotated[str, _pattern(_SERVED_NAME, "a model name of letters, digits and . _ : / @ + -")]
Backend = Annotated[str, _pattern(_BACKEND, "an attention backend name such as FLASH_ATTN_MLA")]
EnvName = Annotated[str, _pattern(ENV_NAME, "an environment variable name")]
Version = Annotated[str, _pattern(_VERSION, "an exact version such as 0.32.0")]
DriverVersion = Annotated[str, _pattern(_DRIVER_VERSION, "an NVIDIA driver version such as 580.95.05")]
CudaToolkit = Annotated[str, _pattern(_CUDA_TOOLKIT, "a CUDA toolkit package suffix such as 13-0")]
PackageSeries = Annotated[
    str, _pattern(_PACKAGE_SERIES, "a version series such as 27.5.* (a series, so updates inside it still apply)")
]
Port = Annotated[int, Field(ge=1024, le=65535)]
Network = Annotated[str, AfterValidator(network)]
PeerAddress = Annotated[str, AfterValidator(peer_address)]
