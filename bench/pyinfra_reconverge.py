"""No-op re-converge of the full pyinfra deploy on 1, 4 and 8 simulated hosts.

Brings fleet ``pyinfra-bench`` to 8 x (8 x H200) sim hosts, converges them (timed: the first run), then times
``pyinfra -y INVENTORY deploy.py --limit ...`` on 1, 4 and 8 of them, ``--repeat`` times each (median), twice:
cold (the controller holds no verdict: the full check, what a fresh controller pays) and warm (the verdict of
the last passed full check is kept: the quick check, every later run). Targets, on the runs an operator
repeats (warm): 8 hosts <= 1.2 x one host (issue 14) and <= 5 s; a second run <= 1/4 of a first run that
converged the fleet (issue 6; not judged when the fleet was already converged).

Exit status: 0 when every target holds, 1 when one is missed (each miss on stderr) or a run fails.

    .venv/bin/python bench/pyinfra_reconverge.py [--hosts 8] [--repeat 5] [--down]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pyinfra import simfleet  # noqa: E402 - the repository root goes on the path first

# Warm runs: 8 hosts / 1 host, 8 hosts in seconds, 8 hosts / a first run that changed the fleet.
RATIO, SECONDS, SECOND_RUN = 1.2, 5.0, 0.25


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fleet", default="pyinfra-bench")
    parser.add_argument("--down", action="store_true", help="remove the fleet afterwards")
    args = parser.parse_args()
    fleet = simfleet.ensure_fleet(args.fleet, args.hosts)
    staging = Path(tempfile.mkdtemp(prefix="pyinfra-bench-"))
    verdicts = staging / "verdicts"
    try:

        def run(*extra: str) -> simfleet.Run:
            return simfleet.pyinfra(fleet, *extra, verdicts=verdicts)

        first = run()
        print(
            f"first run ({args.hosts} hosts): {first.seconds:.1f} s, rc {first.rc}, {first.changed_ops()} ops changed"
        )
        if first.rc != 0:
            print(first.output[-4000:])
            return 1
        counts = sorted({1, 4, args.hosts} & set(range(1, args.hosts + 1)))
        results: dict[str, dict[int, float]] = {"cold": {}, "warm": {}}
        for mode, medians in results.items():
            for count in counts:
                limits = [f"--limit={name}" for name in fleet.hosts[:count]]
                times = []
                for _ in range(args.repeat):
                    if mode == "cold":
                        shutil.rmtree(verdicts, ignore_errors=True)
                    again = run(*limits)
                    if again.rc != 0 or again.changed_ops():
                        print(f"{count} hosts: not a no-op (rc {again.rc}, {again.changed_ops()} changed)")
                        print(again.output[-3000:])
                        return 1
                    times.append(again.seconds)
                medians[count] = statistics.median(times)
                shown = ", ".join(f"{t:.2f}" for t in times)
                print(f"no-op re-converge, {mode}, {count} host(s): median {medians[count]:.2f} s of [{shown}]")
        for mode, medians in results.items():
            one, full = medians[1], medians[args.hosts]
            print(
                f"{mode}: {args.hosts} hosts / 1 host: {full / one:.2f}; {args.hosts} hosts: {full:.2f} s; "
                f"{args.hosts} hosts / first run: {full / first.seconds:.3f}"
            )
        warm = results["warm"]
        ratio, full = warm[args.hosts] / warm[1], warm[args.hosts]
        checks = [
            (f"warm {args.hosts} hosts / 1 host = {ratio:.2f}x (target <= {RATIO})", ratio <= RATIO),
            (f"warm {args.hosts} hosts = {full:.2f} s (target <= {SECONDS:.0f} s)", full <= SECONDS),
        ]
        if first.changed_ops():
            second = full / first.seconds
            checks.append(
                (f"warm {args.hosts} hosts / first run = {second:.3f} (target <= {SECOND_RUN})", second <= SECOND_RUN)
            )
        for line, held in checks:
            print(f"{'ok  ' if held else 'FAIL'} {line}")
            if not held:
                print(f"target missed: {line}", file=sys.stderr)
        if not all(held for _, held in checks):
            return 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if args.down:
            fleet.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
