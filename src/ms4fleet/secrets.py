"""Secrets on the host: where each referenced secret lives, and the script that turns them into the
service's 0600 EnvironmentFile without a secret ever appearing in an argv, a unit or a log.

+ ``service_secret_refs(config)``: ``{"VLLM_API_KEY": ("api_key", SecretSource)}``: the service's secrets and
  where each comes from: a file on the host, a variable of the controller's environment, or the key
  ms4fleet generates on the controller (``ms4fleet.apikey``) for a host with no ``serving.api_key`` whose
  endpoint is not open (``serving.open_endpoint``). The one place both engines learn it from.
+ ``api_key_summary(config)``: where the host's API key comes from, as ``ms4fleet plan --json`` shows it.
+ ``controller_value(source)``: what the controller supplies for a secret (its environment variable's value,
  or the generated key), ``None`` for a file already on the host.
+ ``secret_path(ref, name)``: the host file holding the secret (the referenced file, or where the engine
  uploads a value the controller supplies).
+ ``env_file_script(config, check=False)``: a POSIX shell script, run as root on the host, that prints
  ``changed`` or ``unchanged``; with ``check=True`` it only reports (the engines' read-only fact).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from ms4fleet import apikey, paths
from ms4fleet.config import HostConfig

# Environment variable -> which secret of the config feeds it.
SERVICE_SECRETS = {"VLLM_API_KEY": "api_key"}


@dataclass(frozen=True)
class SecretSource:
    """Where a secret comes from, by reference: at most one of ``file`` (on the host), ``env`` (a variable
    of the controller's environment), ``generated`` (the controller's generated key, ``ms4fleet.apikey``)."""

    file: str | None = None
    env: str | None = None
    generated: bool = False

    @property
    def supplied(self) -> bool:
        """Whether the controller supplies the value (the engine uploads it) rather than the host holding it."""
        return self.file is None


def secret_path(ref: SecretSource, name: str) -> str:
    return ref.file if ref.file is not None else f"{paths.SECRETS_DIR}/{name}"


def service_secret_refs(config: HostConfig) -> dict[str, tuple[str, SecretSource]]:
    """``{"VLLM_API_KEY": ("api_key", source)}`` for the secrets this host's service needs: the inventory's
    reference, else the generated key unless the endpoint is open by configuration."""
    refs = {}
    ref = config.serving.api_key
    if ref is not None:
        refs["VLLM_API_KEY"] = ("api_key", SecretSource(file=ref.file, env=ref.env))
    elif not config.serving.open_endpoint:
        refs["VLLM_API_KEY"] = ("api_key", SecretSource(generated=True))
    return refs


def api_key_summary(config: HostConfig) -> dict[str, str | bool | None]:
    """Where the host's API key comes from, for ``ms4fleet plan --json``: ``source`` (``generated``,
    ``file``, ``env`` or ``open``), the host file, and for the generated key its controller file and whether
    it exists yet (a deploy creates it). Never the key."""
    refs = service_secret_refs(config)
    if "VLLM_API_KEY" not in refs:
        return {"source": "open", "host_file": None}
    name, ref = refs["VLLM_API_KEY"]
    summary: dict[str, str | bool | None] = {
        "source": "generated" if ref.generated else ("env" if ref.env is not None else "file"),
        "host_file": secret_path(ref, name),
    }
    if ref.env is not None:
        summary["env"] = ref.env
    if ref.generated:
        summary["controller_file"] = str(apikey.key_path())
        summary["exists"] = apikey.key_path().exists()
    return summary


def controller_value(source: SecretSource, create: bool = True) -> str | None:
    """The value the controller supplies: the environment variable's (empty when unset) or the generated
    key (made now if there is none, unless ``create`` is false: then ``None``; ``apikey.ApiKeyError`` when
    it cannot be made or read safely); ``None`` for a file on the host."""
    if source.generated:
        if not create and not apikey.key_path().exists():
            return None
        return apikey.read_key(apikey.ensure_key())
    if source.env is not None:
        return os.environ.get(source.env, "")
    return None


def env_file_script(config: HostConfig, check: bool = False) -> str:
    """Build ENV_FILE from the secret files, atomically, replacing it only when the bytes differ.

    ``check``: report ``changed``/``unchanged`` without writing anything under ETC_DIR (the candidate is
    built in a private temporary file and removed)."""
    env_file = shlex.quote(paths.ENV_FILE)
    workdir = '"${TMPDIR:-/tmp}"' if check else shlex.quote(paths.ETC_DIR)
    lines = ["set -eu", "umask 077"]
    if not check:
        lines.append(f"mkdir -p {shlex.quote(paths.ETC_DIR)}")
    lines += [
        f"tmp=$(mktemp {workdir}/.vllm.env.XXXXXX)",
        "trap 'rm -f \"$tmp\"' EXIT",
    ]
    for variable, (name, ref) in service_secret_refs(config).items():
        path = secret_path(ref, name)
        source = shlex.quote(path)
        missing = shlex.quote(f"secret file {path} is missing or empty")
        unsafe = shlex.quote(f"secret file {path}: its first line must be printable ASCII (no NUL, CR, tab)")
        exposed = shlex.quote(
            f"secret file {path} must be root's alone: chown root:root {path} && chmod 600 {path} (now: "
        )
        lines += [
            f"test -s {source} || {{ printf '%s\\n' {missing} >&2; exit 3; }}",
            # Root's alone: owned by uid 0, no group or other bits (0600 or 0400), as the engines write uploads.
            f"perm=$(stat -L -c '%u %a' {source})",
            f'case "$perm" in "0 600"|"0 400") ;; *) printf \'%s%s)\\n\' {exposed} "uid/mode $perm" >&2; exit 3;; esac',
            # Bytes of the first line outside printable ASCII (NUL included, which `read` would drop silently).
            f"test \"$(head -n 1 {source} | LC_ALL=C tr -d '\\040-\\176\\n' | wc -c)\" -eq 0 || "
            f"{{ printf '%s\\n' {unsafe} >&2; exit 3; }}",
            # read and printf are shell builtins and sed reads a pipe: the value never becomes a process argument.
            f"IFS= read -r value < {source} || true",
            # EnvironmentFile syntax: a double-quoted value, with \\ " ` $ escaped, reads back byte for byte.
            f'printf \'%s="%s"\\n\' {variable} "$(printf \'%s\\n\' "$value" | sed \'s/[\\\\"`$]/\\\\&/g\')" >> "$tmp"',
        ]
    replace = "" if check else f'mv "$tmp" {env_file}; '
    lines.append(f'if cmp -s "$tmp" {env_file}; then echo unchanged; else {replace}echo changed; fi')
    return "\n".join(lines) + "\n"
