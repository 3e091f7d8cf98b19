"""No-op re-converge of the full pyinfra deploy on 1, 4 and 8 simulated hosts.

Brings fleet ``pyinfra-bench`` to 8 x (8 x H200) sim hosts, converges them (timed: the first run), then times
``pyinfra -y INVENTORY deploy.py --limit ...`` on 1, 4 and 8 of them, ``--repeat`` times each (median), twice:
cold (the controller holds no verdict: the full check, what a fresh controller pays) and warm (the verdict of
the last passed full check is kept: the quick check, every later run). Targets (issue 6), on the runs an
operator repeats (warm): 8 hosts <= 1.3 x one host and <= 5 s; a second run <= 1/4 of the first.

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
        print("targets (warm): 8 hosts / 1 host <= 1.3, 8 hosts <= 5 s, / first run <= 0.25")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if args.down:
            fleet.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
