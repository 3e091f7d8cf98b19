"""The environment of the programs the controller starts (ssh, rsync, the weights verifier over ssh): only
what they use, so a secret the run was given by environment variable (the Hub token, an API key) reaches
no child that does not need it.

+ ``child_env()``: ``os.environ`` reduced to ``KEPT`` and the locale variables, e.g.
  ``subprocess.run(argv, env=child_env())``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# What ssh and rsync read: where programs and ~/.ssh are, the agent, who runs them, the locale and time.
KEPT = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "TERM", "SSH_AUTH_SOCK", "LANG"})


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k in KEPT or k.startswith("LC_")}
