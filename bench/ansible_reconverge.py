"""No-op re-converge of the same 8-host simulated fleet by each engine, in one run, as a ratio.

Brings fleet ``ansible-bench`` to N sim hosts, converges it once with Ansible (``playbooks/site.yml``), lets
pyinfra settle on the same fleet (one run: its own records), then times no-op re-converges (median of
``--repeat``) of:

+ Ansible, stock settings (forks 5, no pipelining, facts gathered every play, linear strategy);
+ Ansible, tuned as ansible.cfg ships it (pipelining + ControlPersist, smart gathering with a JSON fact
  cache, 16 forks), with the linear and the free strategy;
+ pyinfra (``deploy.py``), stock.

Both engines get the same config (the sim's loopback weights mirror at its pinned revision, the stand-in image
archive), so each re-converge must change nothing; the changed counts are printed with the times.
Target (issue 7): pyinfra <= 0.2 x Ansible.

    .venv/bin/python bench/ansible_reconverge.py [--hosts 8] [--gpus h200x2] [--repeat 3] [--down]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from tests.ansible import simrun  # noqa: E402 - the repository root goes on the path first
from tests.pyinfra import simfleet  # noqa: E402

STOCK_CFG = """[defaults]
collections_path = {root}/playbooks/collections
roles_path = {root}/roles
"""


def timed(label: str, repeat: int, run: Callable[[], tuple[float, int, int, str]]) -> float:
    times = []
    for _ in range(repeat):
        seconds, rc, changed, output = run()
        if rc != 0:
            print(f"{label}: exit {rc}\n{output[-3000:]}")
            raise SystemExit(1)
        times.append(seconds)
        print(f"  {label}: {seconds:.1f} s, {changed} changed")
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--gpus", default="h200x2", help="sim GPU spec of every host (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fleet", default="ansible-bench")
    parser.add_argument("--down", action="store_true", help="remove the fleet afterwards")
    args = parser.parse_args()
    fleet = simfleet.ensure_fleet(args.fleet, args.hosts, gpus=args.gpus)
    inventory = fleet.inventory.with_suffix(".yml")
    archive = simfleet.ensure_image_archive()
    work = Path(tempfile.mkdtemp(prefix="ansible-bench-"))
    stock_cfg = work / "stock.cfg"
    stock_cfg.write_text(STOCK_CFG.format(root=ROOT), encoding="utf-8")
    tuned_env = {"ANSIBLE_CACHE_PLUGIN_CONNECTION": str(work / "facts")}
    try:
        extra = work / "extra-vars.yml"
        extra.write_text(
            yaml.safe_dump({"vllm_service_image_archive": str(archive)}),
            encoding="utf-8",
        )

        def ansible(env: dict[str, str]) -> Callable[[], tuple[float, int, int, str]]:
            def run() -> tuple[float, int, int, str]:
                done = simrun.playbook(inventory, "site.yml", "-e", f"@{extra}", env=env)
                return done.seconds, done.rc, done.changed(), done.output

            return run

        def pyinfra() -> tuple[float, int, int, str]:
            done = simfleet.pyinfra(fleet, archive=archive)
            return done.seconds, done.rc, done.changed_ops(), done.output

        first = ansible(tuned_env)()
        print(f"first converge by Ansible ({args.hosts} x {args.gpus}): {first[0]:.1f} s, rc {first[1]}")
        if first[1] != 0:
            print(first[3][-4000:])
            return 1
        settle = pyinfra()
        print(f"pyinfra settling run on the Ansible-converged fleet: {settle[0]:.1f} s, {settle[2]} ops changed")
        print(f"no-op re-converge, {args.hosts} hosts, median of {args.repeat}:")
        stock = timed("ansible stock", args.repeat, ansible({"ANSIBLE_CONFIG": str(stock_cfg)}))
        tuned = timed("ansible tuned, linear", args.repeat, ansible(tuned_env))
        free = timed("ansible tuned, free", args.repeat, ansible({**tuned_env, "ANSIBLE_STRATEGY": "free"}))
        pyi = timed("pyinfra", args.repeat, pyinfra)
    finally:
        if args.down:
            fleet.down()
    best = min(tuned, free)
    print(f"ansible stock {stock:.1f} s | tuned linear {tuned:.1f} s | tuned free {free:.1f} s | pyinfra {pyi:.1f} s")
    print(f"pyinfra / ansible stock = {pyi / stock:.2f}x; pyinfra / ansible tuned = {pyi / best:.2f}x (target <= 0.2x)")
    print(f"ansible tuned / stock = {best / stock:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
