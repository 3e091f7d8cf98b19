"""A plain deploy keeps a serving fleet serving: before ``deploy.py`` plans any host's operations, the hosts
that serve and whose change stops their replicas (``ms4fleet.rollout.changes.deploy_change``: replica restart,
Docker restart, reboot, or no release recorded) are changed in the core's batches, by the rollout engine
(``ms4fleet_pyinfra.rollout.driver.Rollout`` with ``deploy=True``): canary first, each batch drained from the
load balancer, provisioned where it changed, switched, verified and rejoined, or rolled back and the deploy
stopped. The deploy then runs on every host as before and finds those hosts converged; it applies the rest
(first installs, hosts that serve nothing, live changes) at once, which takes nothing out of service.

+ ``switch_serving_hosts(inventory)``: once per pyinfra run (deploy.py runs once per host, each in its own
  greenlet; the first does the work, the others wait for it). Raises ``PyinfraError`` with one line when the
  batches stop or the policy cannot keep capacity, before any host's own operations are planned.

The batches change hosts while pyinfra still prepares, before its ``--dry`` exit and its confirmation: so they
run only with ``-y`` and without ``--dry``. Otherwise the hosts are only read: ``--dry`` logs the batches it
would run; without ``-y`` a deploy that needs them stops with one line asking for ``-y``.

The load balancer: the hosts' ``lb_inventory`` data (``ms4fleet.rollout.lb.INVENTORY_KEY``) names its pyinfra
inventory, as ``ms4fleet rollout --lb-inventory`` takes it. Without it there are no batches: nothing could keep
clients off a host while it restarts, and the deploy acts on every host at once.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyinfra.api.exceptions import PyinfraError

from ms4fleet.config import ConfigError
from ms4fleet.inventory import Fleet, validate_hosts
from ms4fleet.rollout.hoststate import HostRun, Phase
from ms4fleet.rollout.journal import JOURNAL_NAME, FleetLock, Journal, LockedError, fleet_dir
from ms4fleet.rollout.lb import lb_inventory_of
from ms4fleet.rollout.waves import Policy, PolicyError
from ms4fleet_pyinfra.inventory import raw_hosts
from pyinfra import logger

REPORT_DIR = "deploy-report"

_lock = threading.Lock()
# id(inventory) -> None (done) or the one line that stopped the deploy.
_done: dict[int, str | None] = {}


def _log(run: HostRun, phase: Phase) -> None:
    if phase is not Phase.UNCHANGED:
        detail = f" ({run.detail})" if run.detail else ""
        logger.info(f"[{run.name}] batched deploy: {phase}{detail}")


def _cli_flags() -> tuple[bool, bool]:
    """(``--dry``, ``-y``) of the pyinfra command line this deploy runs under; through pyinfra's API (no
    command line, no confirmation step) the batches run."""
    import pyinfra

    if not pyinfra.is_cli:
        return False, True
    from pyinfra_cli.cli import cli

    # Click keeps its context per greenlet: the command line is parsed again, never run.
    ctx = cli.make_context("pyinfra", sys.argv[1:], resilient_parsing=True)
    return bool(ctx.params.get("dry")), bool(ctx.params.get("yes"))


@contextmanager
def _api_mode() -> Iterator[None]:
    """The rollout engine runs its own pyinfra ``State``s through pyinfra's API, which refuses to add a deploy
    while ``pyinfra.is_cli`` is set. The deploy's other greenlets wait on ``_lock`` meanwhile, so nothing
    else plans operations until the flag is back."""
    import pyinfra

    cli, pyinfra.is_cli = pyinfra.is_cli, False
    try:
        yield
    finally:
        pyinfra.is_cli = cli


def _switch(inventory: Any) -> str | None:
    """Run the batches; the line that stops the deploy, or None."""
    from ms4fleet_pyinfra.rollout.driver import Rollout, Stop
    from ms4fleet_pyinfra.rollout.lbctl import load_lb_inventory

    # ``--limit``: only the hosts pyinfra acts on are read and batched (the others keep serving as they are).
    limit = getattr(getattr(inventory, "state", None), "limit_hosts", None)
    hosts = [host for host in inventory if not isinstance(limit, list) or host in limit]
    try:
        specs = validate_hosts(raw_hosts(hosts), deploying=True)
        path = lb_inventory_of([(spec.name, spec.data) for spec in specs])
        if not path:
            # No load balancer to drain a host from: nothing here can keep a host's clients off it, so the deploy
            # reads nothing more and acts on every host at once, as it always has (docs/pyinfra.md).
            return None
        lb_hosts = load_lb_inventory(path)
        rollout = Rollout(Fleet("pyinfra inventory", tuple(specs)), Policy(), lb_hosts, [_log], deploy=True)
    except ConfigError as err:
        return f"ms4fleet: {err}"
    dry, yes = _cli_flags()
    if dry or not yes:
        try:
            with _api_mode():
                plan = rollout.read()
        except (PolicyError, Stop) as err:
            return f"ms4fleet: refused, nothing was changed: {err}"
        batches = "; ".join(", ".join(batch) for wave in plan.waves for batch in wave.batches)
        if not batches:
            return None
        if dry:
            logger.info(f"ms4fleet: --dry: serving hosts that would change in batches, drained: {batches}")
            return None
        return f"ms4fleet: serving hosts must change in batches ({batches}), before pyinfra's confirmation: run with -y"
    directory = fleet_dir(rollout.specs)
    lock = FleetLock(directory)
    try:
        lock.acquire()
    except LockedError as err:
        return f"ms4fleet: {err}"
    try:
        rollout.journal = Journal(directory / JOURNAL_NAME)
        try:
            with _api_mode():
                report = rollout.run()
        except PolicyError as err:
            return f"ms4fleet: refused, nothing was changed: {err}"
        if report.plan.waves:
            json_path, _ = report.write(directory / REPORT_DIR)
            logger.info(f"ms4fleet: serving hosts changed in batches ({report.outcome}); report: {json_path}")
        if report.stopped:
            return f"ms4fleet: batched deploy stopped: {report.stopped}"
        return None
    finally:
        lock.release()


def switch_serving_hosts(inventory: Any) -> None:
    with _lock:
        key = id(inventory)
        if key not in _done:
            _done.clear()
            _done[key] = _switch(inventory)
        stopped = _done[key]
    if stopped is not None:
        raise PyinfraError(stopped)
