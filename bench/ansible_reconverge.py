"""No-op re-converge of the same simulated fleet by each engine, in one run, against the issue's targets.

Brings a fresh fleet ``ansible-bench`` of N sim hosts up, deploys it once with Ansible
(``ansible-playbook -i FLEET.yml playbooks/site.yml``), lets pyinfra settle on it (one run), then times
no-op re-converges (median of ``--repeat``, each must change nothing) of:

+ Ansible, as ansible.cfg ships it: site.yml's first play runs the core's converged check and leaves
  converged hosts out of the roles;
+ pyinfra (``pyinfra -y FLEET.py deploy.py``) on all N hosts and on one (``--limit``), warm (the verdict of
  the last passed full check kept on the controller, as on every run an operator repeats).

Both engines keep their verdicts in one private cache (the check is the core's, engine-neutral).
Targets (issue 14): Ansible <= 30 s and <= 10 x pyinfra on the same fleet; pyinfra N hosts <= 1.2 x one
host. Prints the ratios; exits 1 when a target fails.

    .venv/bin/python bench/ansible_reconverge.py [--hosts 8] [--gpus h200x2] [--repeat 3] [--reuse] [--down]
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


def timed(label: str, repeat: int, run: Callable[[], tuple[float, int, int, str]]) -> float:
    """Median seconds of ``repeat`` runs, each required to succeed and change nothing."""
    times = []
    for _ in range(repeat):
        seconds, rc, changed, output = run()
        if rc != 0 or changed:
            print(f"{label}: not a no-op (exit {rc}, {changed} changed)\n{output[-3000:]}")
            raise SystemExit(1)
        times.append(seconds)
    print(f"  {label}: median {statistics.median(times):.2f} s of [{', '.join(f'{t:.2f}' for t in times)}]")
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--gpus", default="h200x2", help="sim GPU spec of every host (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3)
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

        def pyinfra(*limit: str) -> Callable[[], tuple[float, int, int, str]]:
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
        print(f"no-op re-converge, median of {args.repeat}:")
        ansible_s = timed(f"ansible-playbook site.yml, {args.hosts} hosts", args.repeat, ansible)
        fleet_s = timed(f"pyinfra deploy.py, {args.hosts} hosts", args.repeat, pyinfra())
        one_s = timed("pyinfra deploy.py, 1 host", args.repeat, pyinfra(f"--limit={fleet.hosts[0]}"))
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
