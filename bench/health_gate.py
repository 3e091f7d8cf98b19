"""The GPU health gate's cost on a no-op re-converge of the simulated fleet, as a ratio to the no-op without it.

Brings fleet ``health-bench`` of N sim hosts up and converges it with pyinfra (the code of this tree), then
times no-op runs of ``pyinfra -y FLEET.py deploy.py`` (median of ``--repeat``, each must change nothing),
warm, on all N hosts and on one, in one run, interleaved:

+ with the gate: ``deploy.py`` as shipped (the converged check reads every GPU's health in its round trip and
  the plan leaves an excluded GPU out; the gate operation checks again before any replica (re)starts);
+ without it: the same tree and deploy with those two steps taken out (a wrapper deploy file that empties
  ``converged.health_parts`` and replaces ``operations.serving.health_gate`` before running it, run beside
  a copy of the checkout's ``config.py``), so the files, units, pre-connect validation and every other
  operation are the same and the difference is the gate alone.

Target (issue 19): the gate adds at most 0.5 s per host (the one-host delta, and the N-host delta over N).
Prints the figures and ratios; exits 1 when the target fails.

    flock -o /work/notes/sim.lock .venv/bin/python bench/health_gate.py [--hosts 4] [--repeat 3] [--down]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pyinfra import simfleet  # noqa: E402 - the repository root goes on the path first

MAX_S_PER_HOST = 0.5
# The shipped deploy without the gate's two steps: no health read (every GPU planned), no gate operation.
UNGATED_DEPLOY = """\
from ms4fleet import converged
from ms4fleet_pyinfra.operations import serving

converged.health_parts = lambda: []
serving.health_gate = lambda **kwargs: None

from ms4fleet_pyinfra.deploys.fleet import deploy

deploy()
"""


def timed(label: str, repeat: int, run: Callable[[], simfleet.Run]) -> list[float]:
    times = []
    for _ in range(repeat):
        done = run()
        if done.rc != 0 or done.changed_ops():
            print(f"{label}: not a no-op (exit {done.rc}, {done.changed_ops()} changed)\n{done.output[-3000:]}")
            raise SystemExit(1)
        times.append(done.seconds)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--gpus", default="h200x2", help="sim GPU spec of every host (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fleet", default="health-bench")
    parser.add_argument("--down", action="store_true", help="remove the fleet afterwards")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows in a log file
    work = Path(tempfile.mkdtemp(prefix="health-bench-"))
    # Named deploy.py beside a copy of the checkout's config.py, and run from there: pyinfra runs the config.py
    # of the directory it runs in, which validates the inventory before connecting when the deploy file is the
    # deploy.py beside it. Both runs then do that work (0.5 s here) first.
    ungated = work / "deploy.py"
    ungated.write_text(UNGATED_DEPLOY)
    shutil.copy(ROOT / "config.py", work / "config.py")
    fleet = simfleet.ensure_fleet(args.fleet, args.hosts, gpus=args.gpus)
    try:

        def deploy(gated: bool, *limit: str) -> Callable[[], simfleet.Run]:
            def run() -> simfleet.Run:
                return simfleet.pyinfra(
                    fleet,
                    *limit,
                    verdicts=work / ("verdicts-gate" if gated else "verdicts-base"),
                    deploy=str(ROOT / "deploy.py") if gated else str(ungated),
                    cwd=ROOT if gated else work,
                )

            return run

        first = deploy(True)()
        print(f"deploy ({args.hosts} x {args.gpus}): {first.seconds:.1f} s, exit {first.rc}")
        if first.rc != 0:
            print(first.output[-4000:])
            return 1
        # One settling run each: the full check, whose verdict the warm runs then reuse.
        for gated in (True, False):
            settle = deploy(gated)()
            if settle.rc != 0:
                print(settle.output[-4000:])
                return 1
        one = f"--limit={fleet.hosts[0]}"
        samples: dict[tuple[bool, int], list[float]] = {(g, n): [] for g in (True, False) for n in (1, args.hosts)}
        for _ in range(args.repeat):  # interleaved: a load spike on this shared machine hits both alike
            for gated in (True, False):
                samples[gated, args.hosts] += timed("fleet", 1, deploy(gated))
                samples[gated, 1] += timed("one host", 1, deploy(gated, one))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.down:
            fleet.down()
    median = {key: statistics.median(times) for key, times in samples.items()}
    print(f"no-op re-converge, median of {args.repeat}:")
    for (gated, hosts), times in sorted(samples.items(), key=lambda kv: (kv[0][1], not kv[0][0])):
        label = f"{'with' if gated else 'without'} the gate, {hosts} host(s)"
        print(f"  {label}: {median[gated, hosts]:.2f} s of [{', '.join(f'{t:.2f}' for t in times)}]")
    one_delta = median[True, 1] - median[False, 1]
    fleet_delta = (median[True, args.hosts] - median[False, args.hosts]) / args.hosts
    print(
        f"  ratio with/without: 1 host {median[True, 1] / median[False, 1]:.2f}x, "
        f"{args.hosts} hosts {median[True, args.hosts] / median[False, args.hosts]:.2f}x"
    )
    failed = False
    for text, value in (("1 host", one_delta), (f"{args.hosts} hosts, per host", fleet_delta)):
        ok = value <= MAX_S_PER_HOST
        failed |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} gate cost, {text}: {value:+.2f} s (target <= +{MAX_S_PER_HOST} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
