"""Secrets on the host: where each referenced secret lives, and the script that turns them into the
service's 0600 EnvironmentFile without a secret ever appearing in an argv, a unit or a log.

+ ``secret_path(ref, name)``: the host file holding the secret (the referenced file, or where the engine
  uploads a value taken from its own environment).
+ ``env_file_script(config, check=False)``: a POSIX shell script, run as root on the host, that prints
  ``changed`` or ``unchanged``; with ``check=True`` it only reports (the engines' read-only fact).
"""

from __future__ import annotations

import shlex

from ms4fleet import paths
from ms4fleet.config import HostConfig, SecretRef

# Environment variable -> which secret of the config feeds it.
SERVICE_SECRETS = {"VLLM_API_KEY": "api_key"}


def secret_path(ref: SecretRef, name: str) -> str:
    return ref.file if ref.file is not None else f"{paths.SECRETS_DIR}/{name}"


def service_secret_refs(config: HostConfig) -> dict[str, tuple[str, SecretRef]]:
    """``{"VLLM_API_KEY": ("api_key", ref)}`` for the secrets this host's service needs."""
    refs = {}
    if config.serving.api_key is not None:
        refs["VLLM_API_KEY"] = ("api_key", config.serving.api_key)
    return refs


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
