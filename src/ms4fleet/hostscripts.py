"""The core's stdlib host-side scripts as self-contained shell commands.

A fact must work on a host that ms4fleet has never touched (and under ``--dry``, where nothing may be
uploaded), so the script travels inside the command: compressed, base64-encoded and executed by the host's
``python3 -c``. The probe is about 10 KB this way, far below the kernel's 128 KiB per-argument limit.
"""

from __future__ import annotations

import base64
import shlex
import zlib
from functools import cache
from importlib import resources


def source(script: str) -> bytes:
    """The bytes of ``ms4fleet/hostside/<script>`` (what an engine pipes to ``python3 -``)."""
    return resources.files("ms4fleet.hostside").joinpath(script).read_bytes()


@cache
def _payload(script: str) -> str:
    return base64.b64encode(zlib.compress(source(script), 9)).decode("ascii")


def python_command(script: str, *args: str) -> str:
    """``python3 -c '<loader>' ARGS``: runs ``ms4fleet/hostside/<script>`` as ``__main__`` with ``ARGS``."""
    loader = (
        "import base64,sys,zlib;"
        f"sys.argv[0]={script!r};"
        f"exec(compile(zlib.decompress(base64.b64decode({_payload(script)!r})),{script!r},'exec'))"
    )
    return " ".join(["python3", "-c", shlex.quote(loader), *(shlex.quote(a) for a in args)])
