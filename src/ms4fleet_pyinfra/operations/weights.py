"""Weights: fetched once on the controller (the core's ``fetch_weights``), pushed to each host over SSH with
rsync and verified there by the core's host-side verifier (``ms4fleet.weights.stage``). A host whose
directory already verifies costs one quick stat check and nothing is fetched."""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

from pyinfra.api.command import FunctionCommand
from pyinfra.api.operation import operation
from pyinfra.context import host

from ms4fleet.progress import LineView, Tracker
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.fetch import fetch_weights
from ms4fleet.weights.request import WeightsRequest, open_source
from ms4fleet.weights.secret import scrubbed
from ms4fleet.weights.stage import HostTarget, StageJob, stage_to_hosts
from ms4fleet_pyinfra.facts import WeightsState
from ms4fleet_pyinfra.report import fail, say
from pyinfra import logger

# One controller-side fetch per distinct request, shared by every host of the run.
_staged: dict[tuple[str, str, str], Path] = {}
_lock = threading.Lock()


def _lines(label: str, unit: str = "file") -> Tracker:
    """A transfer's periodic progress lines in pyinfra's log (a copy of 120 GB takes minutes)."""
    return Tracker(LineView(logger.info, label, unit))


def _stage_on_controller(request: WeightsRequest, staging_root: Path) -> Path:
    key = (request.repo_id, request.revision, request.source)
    with _lock:
        if key not in _staged:
            staged = staging_root / request.repo_id.replace("/", "--") / request.revision
            source, secret = open_source(request)
            with scrubbed(secret):
                fetch_weights(
                    source,
                    staged,
                    profile=request.profile,
                    include=request.include,
                    exclude=request.exclude,
                    progress=_lines(f"weights fetch {request.revision[:12]} to the controller"),
                )
            _staged[key] = staged
        return _staged[key]


def _push(state: Any, host: Any, request: WeightsRequest, target: HostTarget, staging_root: str) -> bool:
    try:
        staged = _stage_on_controller(request, Path(staging_root))
    except WeightsError as err:
        return fail(state, host, f"weights: fetch on the controller failed: {err}")
    job = StageJob(target, request.dest, request.owner)
    outcome = stage_to_hosts(staged, [job], parallel=1, progress=_lines(f"{host.print_prefix}weights copy", "host"))[0]
    if outcome.status == "failed":
        return fail(state, host, f"weights: {outcome.detail}")
    say(host, f"weights {request.revision[:12]}: {outcome.status}, {outcome.detail}")
    return True


@operation()
def weights(request: WeightsRequest, target: HostTarget, staging_root: str) -> Generator[Any, None, None]:
    report = host.get_fact(WeightsState, directory=request.dest, repo=request.repo_id, revision=request.revision)
    if report.get("ok"):
        host.noop(f"weights verified at {request.dest} ({report.get('files')} files)")
        return
    yield FunctionCommand(_push, (request, target, staging_root), {})
