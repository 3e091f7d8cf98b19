"""The handlers behind ``ms4fleet weights fetch|verify|stage`` (``cli`` registers them and imports this module
only when one runs, so ``ms4fleet --help`` does not load huggingface_hub)."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ms4fleet import paths
from ms4fleet.catalog import model_profiles
from ms4fleet.config import ConfigError
from ms4fleet.controller import ControllerError, deploy_uses, require_controller
from ms4fleet.hostside import weights_verify as hv
from ms4fleet.progress import tracker_for
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.fetch import fetch_weights, make_parent
from ms4fleet.weights.peers import Member, check_members, stage_group
from ms4fleet.weights.request import WeightsRequest, by_files, open_source, request_for_host
from ms4fleet.weights.secret import TokenRef, scrubbed
from ms4fleet.weights.stage import StageJob, is_local, stage_to_hosts, target_for

if TYPE_CHECKING:
    from ms4fleet.inventory import Fleet


def _token_ref(args: argparse.Namespace) -> TokenRef | None:
    if args.token_file and args.token_env:
        raise WeightsError("use one of --token-file or --token-env")
    if args.token_file:
        return TokenRef(file=args.token_file)
    if args.token_env:
        return TokenRef(env=args.token_env)
    return None


def _explicit_request(args: argparse.Namespace) -> WeightsRequest:
    profiles = model_profiles()
    if args.profile not in profiles:
        raise WeightsError(f"--profile {args.profile!r} is not in the catalog: one of {', '.join(sorted(profiles))}")
    if not args.revision:
        raise WeightsError("--revision is required: a 40-character commit hash")
    profile = profiles[args.profile]
    return WeightsRequest(
        profile=profile.id,
        repo_id=profile.repo_id,
        revision=args.revision,
        include=profile.include_patterns,
        exclude=profile.exclude_patterns,
        dest=args.dest or paths.model_dir(paths.WEIGHTS_ROOT, profile, args.revision),
        source=args.source,
        owner=args.owner,
        mirror_url=args.mirror_url,
        manifest_sha256=args.manifest_sha256,
        allow_insecure=args.allow_insecure,
        path=args.path,
        token=_token_ref(args),
    )


def _load_inventory(path: str) -> Fleet:
    # Inventory loading pulls in pyinfra and Ansible: only the commands that read one pay for the import.
    from ms4fleet.inventory import load_inventory

    return load_inventory(path)


def _host_request(args: argparse.Namespace) -> WeightsRequest:
    fleet = _load_inventory(args.inventory).select([args.host])
    if len(fleet) != 1:
        raise WeightsError(f"--host {args.host!r} names no single host of {args.inventory}")
    request = request_for_host(fleet.hosts[0].config)
    override = _token_ref(args)
    changes: dict[str, Any] = {"token": override} if override is not None else {}
    if args.dest:
        changes["dest"] = args.dest
    if args.owner:
        changes["owner"] = args.owner
    return replace(request, **changes)


def fetch(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        request = _host_request(args) if args.inventory else _explicit_request(args)
        make_parent(Path(request.dest))
        source, secret = open_source(request, endpoint=args.endpoint)
    except (WeightsError, ConfigError) as err:
        print(f"ms4fleet weights fetch: {err}", file=sys.stderr)
        return 2
    try:
        with scrubbed(secret), tracker_for(console, "weights fetch") as tracker:
            result = fetch_weights(
                source,
                Path(request.dest),
                profile=request.profile,
                include=request.include,
                exclude=request.exclude,
                owner=request.owner,
                full=args.full,
                workers=args.workers,
                progress=tracker,
            )
    except WeightsError as err:
        print(f"ms4fleet weights fetch: {err}", file=sys.stderr)
        return 1
    summary: dict[str, Any] = {
        "dest": str(result.dest),
        "action": result.action,
        "repo": result.manifest.repo,
        "revision": result.manifest.revision,
        "files": len(result.manifest.files),
        "bytes": result.manifest.total_bytes,
        "fetched": list(result.fetched),
        "bytes_transferred": result.bytes_transferred,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{result.dest}: {result.action}, {summary['files']} files verified "
            f"({summary['bytes'] / 1024**3:.2f} GiB), {len(result.fetched)} fetched "
            f"({result.bytes_transferred / 1024**3:.2f} GiB transferred)"
        )
    return 0


def verify(args: argparse.Namespace) -> int:
    argv = ["verify", args.dir] + (["--full"] if args.full else []) + (["--json"] if args.json else [])
    argv += ["--repo", args.repo] if args.repo else []
    argv += ["--revision", args.revision] if args.revision else []
    return hv.main(argv)


def stage(args: argparse.Namespace) -> int:
    try:
        fleet = _load_inventory(args.inventory).select(args.limit)
        if not len(fleet):
            raise WeightsError(f"{args.inventory}: no host matches --limit {' '.join(args.limit or [])}")
        requests = [(spec, request_for_host(spec.config)) for spec in fleet]
        override = _token_ref(args)
        if args.peers:
            check_members([Member(s.name, s.connection, s.data, s.config, r) for s, r in requests], args.source_address)
    except (WeightsError, ConfigError) as err:
        print(f"ms4fleet weights stage: {err}", file=sys.stderr)
        return 2
    # Before fetching anything: the programs staging runs, as the engines check them.
    try:
        require_controller(deploy_uses(None, weights=True, remote=any(not is_local(s.name, s.data) for s in fleet)))
    except ControllerError as err:
        print(f"ms4fleet: {err}", file=sys.stderr)
        return 1
    groups = by_files(requests, lambda pair: pair[1])
    console = Console(stderr=True)
    failed = 0
    for group in groups:
        first = group[0][1]
        if override is not None:
            first = replace(first, token=override)
        staged = Path(args.staging_dir) / first.repo_id.replace("/", "--") / first.revision
        if args.peers and first.source == "mirror":
            # The hosts pull from the mirror themselves: the controller only reads the pinned manifest.
            failed += _stage_peers(args, group, console, source=None)
            continue
        try:
            source, secret = open_source(first, endpoint=args.endpoint)
            with scrubbed(secret), tracker_for(console, "fetch to the controller") as tracker:
                result = fetch_weights(
                    source,
                    staged,
                    profile=first.profile,
                    include=first.include,
                    exclude=first.exclude,
                    progress=tracker,
                )
        except WeightsError as err:
            print(f"ms4fleet weights stage: fetch for {len(group)} host(s) failed: {err}", file=sys.stderr)
            failed += len(group)
            continue
        print(f"staged {first.repo_id}@{first.revision[:12]} at {staged}: {result.action}")
        if args.peers:
            failed += _stage_peers(args, group, console, source=(staged, secrets.token_urlsafe(32)))
            continue
        jobs = [
            StageJob(target_for(spec.name, spec.connection, spec.data), request.dest, request.owner)
            for spec, request in group
        ]
        with tracker_for(console, f"stage to {len(jobs)} host(s)", unit="host") as tracker:
            outcomes = stage_to_hosts(staged, jobs, parallel=args.parallel, progress=tracker, bwlimit=args.bwlimit)
        for outcome in outcomes:
            gib = outcome.bytes_sent / 1024**3
            print(f"{outcome.host}: {outcome.status}: {outcome.detail} ({gib:.2f} GiB sent)")
            failed += outcome.status == "failed"
    return 1 if failed else 0


def _stage_peers(
    args: argparse.Namespace,
    group: list[tuple[Any, WeightsRequest]],
    console: Console,
    source: tuple[Path, str] | None,
) -> int:
    """Stage ``group`` through the peer tree; the number of hosts that failed."""
    members = [Member(spec.name, spec.connection, spec.data, spec.config, request) for spec, request in group]
    try:
        with tracker_for(console, f"stage to {len(members)} host(s) through peers", unit="host") as tracker:
            report = stage_group(members, source, args.source_address, progress=tracker)
    except WeightsError as err:
        print(f"ms4fleet weights stage: {len(group)} host(s): {err}", file=sys.stderr)
        return len(group)
    for line in report.summary():
        print(line)
    return sum(outcome.status == "failed" for outcome in report.outcomes)
