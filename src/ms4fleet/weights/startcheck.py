"""The weights check that runs before every vLLM (re)start, for the unit and the provisioned host files.

The host-side verifier is installed once as a managed file (``verifier_file()``); the unit runs it as
``ExecStartPre`` (``exec_start_pre(...)``): quick mode, so a restart costs a stat of each file unless one
changed, in which case only that file is hashed. A failed check fails the start with the bad files named in
the journal, instead of vLLM loading corrupted or missing weights.
"""

from __future__ import annotations

from ms4fleet.escape import systemd_word
from ms4fleet.weights.stage import verifier_source

HOST_VERIFIER_PATH = "/usr/local/lib/ms4fleet/weights_verify.py"
HOST_PYTHON = "/usr/bin/python3"


def verifier_file() -> tuple[str, bytes, int]:
    """(path, content, mode) of the verifier script as provisioning installs it."""
    return HOST_VERIFIER_PATH, verifier_source(), 0o755


def exec_start_pre(dest: str, repo: str, revision: str) -> str:
    """The ``ExecStartPre=`` value; ``+`` runs it with full privileges so it may refresh the stat stamp."""
    argv = [HOST_PYTHON, HOST_VERIFIER_PATH, "verify", dest, "--repo", repo, "--revision", revision]
    return "+" + " ".join(systemd_word(word) for word in argv)
