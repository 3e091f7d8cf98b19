"""``ms4fleet verify URL --model NAME``: the endpoint gate as a command (exit 0 pass, 1 fail, 2 unreachable
or bad usage). ``register(subparsers)`` adds it to the ms4fleet CLI."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ms4fleet.catalog import model_profiles
from ms4fleet.verify import (
    CHECKS,
    DEFAULT_CHECKS,
    DEFAULT_TIMEOUT_S,
    EXIT_UNREACHABLE,
    VerifyReport,
    checks_for_profile,
    verify,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check that a vLLM endpoint really serves (decode, tools, streaming, metrics, ...)",
        description=__doc__,
    )
    parser.add_argument("url", help="base URL of the endpoint, e.g. http://10.0.0.5:8000")
    parser.add_argument("--model", required=True, help="served model name the endpoint must list")
    parser.add_argument("--api-key-file", type=Path, help="file holding the API key (never pass keys as arguments)")
    parser.add_argument(
        "--open-endpoint",
        action="store_true",
        help="the endpoint is meant to answer without a key (serving.open_endpoint): the auth check is skipped",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--profile",
        choices=sorted(model_profiles()),
        help="select the checks this catalog model can pass (image when multimodal, reasoning when it reasons)",
    )
    parser.add_argument("--checks", help=f"comma-separated checks to run, from: {','.join(CHECKS)}")
    parser.add_argument("--skip", help="comma-separated checks to leave out")
    parser.add_argument(
        "--log-file",
        type=Path,
        help="service journal or container log to name the cause of a failure from ('-' reads stdin)",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help=f"seconds per request (default {DEFAULT_TIMEOUT_S:g})"
    )
    parser.set_defaults(func=run)


def _names(text: str | None, option: str) -> set[str]:
    names = {part.strip() for part in (text or "").split(",") if part.strip()}
    unknown = names - set(CHECKS)
    if unknown:
        raise ValueError(f"{option}: unknown check(s) {', '.join(sorted(unknown))}; choose from {', '.join(CHECKS)}")
    return names


def _read_secret(path: Path) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"--api-key-file: cannot read {path}: {exc.strerror}") from exc
    if not key:
        raise ValueError(f"--api-key-file: {path} is empty")
    return key


def _log_reader(path: Path) -> Callable[[], str]:
    """Read the log only when a check failed, after the failing request made the service write to it."""
    if str(path) == "-":
        return sys.stdin.read
    if not path.is_file():
        raise ValueError(f"--log-file: {path} is not a readable file")
    return lambda: path.read_text(encoding="utf-8", errors="replace")


def run(args: argparse.Namespace) -> int:
    try:
        selected = set(checks_for_profile(model_profiles()[args.profile])) if args.profile else set(DEFAULT_CHECKS)
        if args.checks:
            selected = _names(args.checks, "--checks")
        selected -= _names(args.skip, "--skip")
        api_key = _read_secret(args.api_key_file) if args.api_key_file else None
        logs = _log_reader(args.log_file) if args.log_file is not None else None
    except (ValueError, OSError) as exc:
        print(f"ms4fleet verify: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    report = verify(
        args.url,
        args.model,
        api_key=api_key,
        checks=selected,
        logs=logs,
        timeout_s=args.timeout,
        open_endpoint=args.open_endpoint,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else render(report))
    return report.exit_code


def render(report: VerifyReport) -> str:
    """The report as aligned text lines a person reads in a terminal or a CI log."""
    lines = [f"verify {report.url} model {report.model}"]
    for check in report.checks:
        timing = ""
        if check.latency_s is not None and check.status != "skip":
            timing = f"{check.latency_s * 1000:8.0f} ms"
            if check.ttft_s is not None:
                timing += f"  ttft {check.ttft_s * 1000:.0f} ms"
        lines.append(f"  {check.status.upper():4}  {check.name:10} {timing:26} {check.detail}")
    for cause in report.causes:
        lines.append(f"  cause: {cause.id}: {cause.title}")
        lines.append(f"    fix: {cause.fix}")
        lines.append(f"    log: {cause.evidence}")
    verdict = {0: "PASS", 1: "FAIL", 2: "UNREACHABLE"}[report.exit_code]
    lines.append(f"{verdict} (exit {report.exit_code})")
    return "\n".join(lines)
