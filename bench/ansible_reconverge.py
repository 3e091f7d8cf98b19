"""No-op re-converge of the same simulated fleet by each engine, in one run, against the issue's targets.

Brings a fresh fleet ``ansible-bench`` of N sim hosts up, deploys it once with Ansible
(``ansible-playbook -i FLEET.yml playbooks/site.yml``), lets pyinfra settle on it (one run), then times
no-op re-converges (median of ``--repeat``, each must change nothing) of:

+ Ansible, as ansible.cfg ships it: site.yml's first play runs the core's converged check and leaves
  converged hosts out of the roles;
+ pyinfra (``pyinfra -y FLEET.py deploy.py``) on all N hosts and on one (``--limit``), warm (the verdict of
  the last passed full check kept on the controller, as on every run an operator repeats), in alternating
  pairs (``--pyinfra-repeat``): a drift in the machine's load then weighs on both sides of the ratio alike.

The sim hosts run on the controller's own cores, so every host's SSH login and check is CPU taken from the
same machine; on a VM, the hypervisor takes some too (steal). The run prints the share of CPU time stolen
while pyinfra was timed: a figure taken under heavy steal says more about the machine than about pyinfra.

Both engines keep their verdicts in one private cache (the check is the core's, engine-neutral).
Targets (issue 14): Ansible <= 30 s and <= 10 x pyinfra on the same fleet; pyinfra N hosts <= 1.2 x one
host. Prints the ratios; exits 1 when a target fails.

    .venv/bin/python bench/ansible_reconverge.py [--hosts 8] [--gpus h200x2] [--repeat 3] [--pyinfra-repeat 15]
        [--reuse] [--down]
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

from ms4fleet.verdicts import CACHE_ENV  # noqa: E402 - the repository root goes on the path first
from ms4fleet_sim import fleet as simcore  # noqa: E402
from tests.ansible import simassets, simrun  # noqa: E402
from tests.pyinfra import simfleet  # noqa: E402

ANSIBLE_MAX_S = 30.0
ANSIBLE_OVER_PYINFRA_MAX = 10.0
PYINFRA_FLEET_OVER_ONE_MAX = 1.2
STEAL = 7  # /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice


Run = Callable[[], tuple[float, int, int, str]]


def cpu_times() -> list[int]:
    """The machine's CPU time counters (``/proc/stat``, all cores)."""
    with open("/proc/stat", encoding="ascii") as stat:
        return [int(value) for value in stat.readline().split()[1:]]


def stolen(before: list[int], after: list[int]) -> float:
    """The share of the machine's CPU time that the hypervisor took between two ``cpu_times``."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    # guest and guest_nice are counted in user and nice already
    total = sum(spent[: STEAL + 1])
    return spent[STEAL] / total if total else 0.0


def no_op_seconds(label: str, run: Run) -> float:
    """One run's seconds; it must succeed and change nothing."""
    seconds, rc, changed, output = run()
    if rc != 0 or changed:
        print(f"{label}: not a no-op (exit {rc}, {changed} changed)\n{output[-3000:]}")
        raise SystemExit(1)
    return seconds


def timed(repeat: int, runs: dict[str, Run]) -> list[float]:
    """Median seconds of each run, the runs taken in turn ``repeat`` times."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeat):
        for label, run in runs.items():
            times[label].append(no_op_seconds(label, run))
    for label, seconds in times.items():
        print(f"  {label}: median {statistics.median(seconds):.2f} s of [{', '.join(f'{t:.2f}' for t in seconds)}]")
    return [statistics.median(seconds) for seconds in times.values()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--gpus", default="h200x2", help="sim GPU spec of every host (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="Ansible runs (default: %(default)s)")
    parser.add_argument("--pyinfra-repeat", type=int, default=15, help="pyinfra pairs (default: %(default)s)")
    parser.add_argument("--fleet", default="ansible-bench")
    parser.add_argument("--reuse", action="store_true", help="keep the fleet if it is up (default: a fresh one)")
    parser.add_argument("--down", action="store_true", help="remove the fleet afterwards")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows in a log file
    if not args.reuse:
        simcore.down(simcore.Fleet(root=ROOT, name=args.fleet))
    fleet = simfleet.ensure_fleet(args.fleet, args.hosts, gpus=args.gpus)
    work = Path(tempfile.mkdtemp(prefix="ansible-bench-"))
    verdicts = work / "verdicts"
    # Ansible's facts and both engines' converged verdicts in this run's own directory.
    env = {"ANSIBLE_CACHE_PLUGIN_CONNECTION": str(work / "facts"), CACHE_ENV: str(verdicts)}
    extra = simassets.extra_vars()
    try:

        def ansible() -> tuple[float, int, int, str]:
            done = simrun.playbook(fleet.inventory.with_suffix(".yml"), "site.yml", "-e", f"@{extra}", env=env)
            return done.seconds, done.rc, done.changed(), done.output

        def pyinfra(*limit: str) -> Run:
            def run() -> tuple[float, int, int, str]:
                done = simfleet.pyinfra(fleet, *limit, archive=simassets.image_archive(), verdicts=verdicts)
                return done.seconds, done.rc, done.changed_ops(), done.output

            return run

        first = ansible()
        print(f"deploy by Ansible ({args.hosts} x {args.gpus}): {first[0]:.1f} s, exit {first[1]}, {first[2]} changed")
        if first[1] != 0:
            print(first[3][-4000:])
            return 1
        settle = pyinfra()()
        print(f"pyinfra on the Ansible-deployed fleet: {settle[0]:.1f} s, exit {settle[1]}, {settle[2]} ops changed")
        if settle[1] != 0:
            print(settle[3][-4000:])
            return 1
        print(f"no-op re-converge, median of {args.repeat} (Ansible) and {args.pyinfra_repeat} (pyinfra):")
        (ansible_s,) = timed(args.repeat, {f"ansible-playbook site.yml, {args.hosts} hosts": ansible})
        before = cpu_times()
        fleet_s, one_s = timed(
            args.pyinfra_repeat,
            {
                f"pyinfra deploy.py, {args.hosts} hosts": pyinfra(),
                "pyinfra deploy.py, 1 host": pyinfra(f"--limit={fleet.hosts[0]}"),
            },
        )
        print(f"CPU time stolen by the hypervisor while pyinfra was timed: {stolen(before, cpu_times()):.0%}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.down:
            fleet.down()
    results = [
        (f"ansible {ansible_s:.2f} s", ansible_s, ANSIBLE_MAX_S),
        (f"ansible / pyinfra = {ansible_s / fleet_s:.2f}x", ansible_s / fleet_s, ANSIBLE_OVER_PYINFRA_MAX),
        (f"pyinfra {args.hosts} hosts / 1 host = {fleet_s / one_s:.2f}x", fleet_s / one_s, PYINFRA_FLEET_OVER_ONE_MAX),
    ]
    failed = False
    for text, value, limit in results:
        ok = value <= limit
        failed |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} {text} (target <= {limit:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
