"""Benchmark: `ms4fleet plan` on a generated 1,000-host inventory (target: under 2 s, whole command).

Run: .venv/bin/python bench/plan_fleet.py [--hosts 1000] [--runs 3]
Prints one line per run and the best, and exits 1 if the best misses the target.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = [("h100-sxm", 8), ("h200-sxm", 8), ("b200", 8), ("h200-nvl", 4), ("h100-pcie", 1)]
TARGET_S = 2.0


def write_inventory(path: Path, hosts: int) -> None:
    lines = [
        "_all = {",
        '    "ms4fleet_serving": {"model": "mistral-small-4", "api_key": {"file": "/etc/ms4fleet/api-key"}},',
        '    "ms4fleet_weights": {"revision": "' + "a" * 40 + '", "hf_token": {"env": "HF_TOKEN"}},',
        "}",
        "gpus = [",
    ]
    for i in range(hosts):
        kind, count = KINDS[i % len(KINDS)]
        lines.append(
            f'    ("gpu-{i:04d}", {{"ssh_hostname": "10.{i // 65536}.{i // 256 % 256}.{i % 256}", '
            f'"ms4fleet_gpu": {{"kind": "{kind}", "count": {count}}}}}),'
        )
    lines += ["]", "all = (gpus, _all)  # noqa: A001", ""]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="time the --json output instead of the table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "fleet.py"
        write_inventory(inventory, args.hosts)
        times: list[float] = []
        cpus: list[float] = []
        for run in range(args.runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "ms4fleet.cli", "plan", str(inventory), *(["--json"] if args.json else [])],
                capture_output=True,
                text=True,
                check=True,
            )
            elapsed = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            # CPU seconds of the command itself: what it costs on an idle machine, whatever else runs now.
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            times.append(elapsed)
            cpus.append(cpu)
            kind = "JSON" if args.json else "table"
            size_kib = len(done.stdout) // 1024
            print(f"run {run + 1}: {args.hosts} hosts in {elapsed:.2f} s wall, {cpu:.2f} s CPU ({size_kib} KiB {kind})")
    best = min(times)
    verdict = "ok" if best < TARGET_S else "MISSED"
    load = os.getloadavg()[0]
    print(
        f"best {best:.2f} s wall ({min(cpus):.2f} s CPU) for {args.hosts} hosts; target < {TARGET_S:.1f} s: "
        f"{verdict} (load average {load:.1f} on {os.cpu_count()} CPUs)"
    )
    return 0 if best < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
