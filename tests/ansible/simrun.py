"""Running the Ansible engine against a simulated fleet as a user would (``ansible-playbook`` from the
repository root), and reading the result: exit status, seconds, and the PLAY RECAP per host."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    rc: int
    seconds: float
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """``{host: {"ok": n, "changed": n, "unreachable": n, "failed": n}}`` summed over the run's plays."""
        out: dict[str, dict[str, int]] = {}
        for host, ok, changed, unreachable, failed in RECAP.findall(self.output):
            row = out.setdefault(host, {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0})
            for key, value in (("ok", ok), ("changed", changed), ("unreachable", unreachable), ("failed", failed)):
                row[key] += int(value)
        return out

    def changed(self) -> int:
        return sum(row["changed"] for row in self.recap().values())


def playbook(
    inventory: Path, playbook_name: str, *args: str, env: Mapping[str, str] | None = None, cwd: Path = ROOT
) -> Run:
    """``ansible-playbook -i INVENTORY playbooks/NAME ARGS`` with the repository's ansible.cfg (or ``env``'s)."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ANSIBLE_FORCE_COLOR": "0"}
    full_env.update(env or {})
    argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / playbook_name), *args]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    return Run(done.returncode, time.monotonic() - started, done.stdout + done.stderr)
