"""``ms4fleet plan`` (what each host of an inventory will serve) and ``ms4fleet size`` (any HF config)."""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ms4fleet.catalog import GIB, gpu_kinds
from ms4fleet.cli import UsageError, existing_file, print_json
from ms4fleet.config import DEFAULT_GPU_MEMORY_UTILIZATION
from ms4fleet.health import Exclusion, exclusions_from_json
from ms4fleet.inventory import Fleet, load_inventory
from ms4fleet.probe import ProbeError, ProbeReport, parse_probe
from ms4fleet.provision import OsRelease
from ms4fleet.secrets import api_key_summary
from ms4fleet.serving import ServingPlan, plan_host
from ms4fleet.sizing import (
    KvShape,
    ModelShape,
    SizingInput,
    gib,
    kv_bytes_per_token,
    safetensors_weight_bytes,
    size,
    vllm_default_max_num_batched_tokens,
    vllm_default_max_num_seqs,
)

_ROWS_PER_HOST_UP_TO = 50
_VERDICT_STYLE = {"fits": "green", "fits-with-reduced-context": "yellow", "does-not-fit": "red"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = subparsers.add_parser(
        "plan",
        help="show what every host of an inventory will serve, without touching any host",
        description="Plan replicas, TP, KV capacity and a fit verdict per host from the inventory alone.",
    )
    plan.add_argument("inventory", type=existing_file, help="pyinfra .py or Ansible .yml inventory")
    plan.add_argument("--limit", action="append", help="host or group (repeatable)")
    plan.add_argument(
        "--json", action="store_true", help="each host's full plan (files with their bytes, packages, units, digest)"
    )
    plan.add_argument(
        "--os",
        type=_os_release,
        help="with --json: ID:VERSION_ID the hosts run, e.g. ubuntu:24.04 (default: the core's, hostplan.DEFAULT_OS, "
        "stated in the JSON; an engine plans for the OS it reads on the host)",
    )
    plan.add_argument(
        "--health",
        type=existing_file,
        help="the output of `ms4fleet health INVENTORY --json`: place replicas only on the GPUs it does not exclude "
        "(as the engines do) and say which replica is left out and why",
    )
    plan.add_argument(
        "--probe",
        action="append",
        metavar="[HOST=]FILE",
        help="a host's probe output (`python3 probe.py` on it, or a capture): decide its driver and Docker from what "
        "it already has, as the engines do (adopt, keep, upgrade, take over or refuse); without HOST= for every host "
        "(repeatable)",
    )
    plan.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write one self-contained page: a stacked bar per GPU of each host (weights, vLLM's reserve, "
        "KV cache, free), from the figures --json prints",
    )
    plan.add_argument("--argv", action="store_true", help="also print each replica's vllm serve argv")
    plan.add_argument("--strict", action="store_true", help="exit 1 when any host's verdict is does-not-fit")
    plan.set_defaults(func=run_plan)

    sizer = subparsers.add_parser(
        "size",
        help="size the KV cache of any Hugging Face model config (GQA or MLA)",
        description="KV bytes per token, KV budget and token capacity for one replica.",
    )
    sizer.add_argument("--model-config", required=True, type=existing_file, help="config.json or params.json")
    sizer.add_argument("--gpu", choices=sorted(gpu_kinds()), help="a catalog GPU kind (its CUDA total and name)")
    sizer.add_argument(
        "--gpu-mem-gib", type=float, help="memory of one GPU as CUDA reports it (vLLM's total_gpu_memory), GiB"
    )
    sizer.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    sizer.add_argument(
        "--util",
        type=float,
        default=DEFAULT_GPU_MEMORY_UTILIZATION,
        help=f"gpu_memory_utilization (default {DEFAULT_GPU_MEMORY_UTILIZATION})",
    )
    sizer.add_argument(
        "--weights-gib", type=float, help="weights of the whole model, GiB (default: the safetensors beside the config)"
    )
    sizer.add_argument("--kv-cache-gib", type=float, help="a pinned KV budget per GPU, GiB: only converted to tokens")
    sizer.add_argument("--kv-dtype", choices=["auto", "fp8"], default="auto")
    sizer.add_argument("--max-num-batched-tokens", type=int, help="default: vLLM's for this GPU class")
    sizer.add_argument("--max-num-seqs", type=int, help="default: vLLM's for this GPU class")
    sizer.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs (none to reserve)")
    sizer.add_argument("--vllm-version", help="the vLLM release that will run it (default: current)")
    sizer.add_argument("--max-model-len", type=int, help="context to judge against (default: the config's)")
    sizer.add_argument("--json", action="store_true")
    sizer.set_defaults(func=run_size)


def run_plan(args: argparse.Namespace) -> int:
    fleet = load_inventory(args.inventory).select(args.limit)
    excluded = _health_exclusions(args.health) if args.health else {}
    probes = _probes(args.probe or [], [host.name for host in fleet])
    plans = [plan_host(host.config, excluded=excluded.get(host.name, ())) for host in fleet]
    # Only --json and --probe build whole host plans (their weights and gates pull in the HTTP client): import here.
    stacks = {}
    if probes:
        from ms4fleet.hostplan import stack_for

        stacks = {host.name: stack_for(host.config, probes[host.name]) for host in fleet if host.name in probes}
        for name, stack in stacks.items():
            if stack is not None:
                stack.check(name)  # a refusal: one line (ConfigError, exit 2) before any plan is printed
    if args.json:
        # "plan": the HostPlan the engine applies, its files' bytes in "contents" by sha256 (hosts share most
        # files); "settings": the host's ms4fleet_* data exactly as its engine's loader merged it; "sizing": the
        # serving plan's verdict and figures; "api_key": where the endpoint's key comes from (never the key).
        from ms4fleet.hostplan import plan_for_data

        contents: dict[str, str] = {}
        hosts = [
            {
                "host": host.name,
                "plan": plan_for_data(
                    host.config, host.data, args.os, excluded.get(host.name, ()), stacks.get(host.name)
                ).to_json(contents),
                "settings": {k: v for k, v in host.data.items() if k.startswith("ms4fleet_")},
                "sizing": plan.to_dict(),
                "api_key": api_key_summary(host.config),
            }
            for host, plan in zip(fleet, plans, strict=True)
        ]
        print_json({"inventory": str(args.inventory), "hosts": hosts, "contents": contents})
    else:
        _print_plans(plans, show_argv=args.argv)
        _print_api_keys(fleet)
        for name, stack in stacks.items():
            if stack is None:
                continue
            decisions = [("driver", stack.driver), ("docker", stack.docker), ("toolkit", stack.container_toolkit)]
            for what, decision in decisions:
                if decision is not None:
                    print(f"{name}: {what} {decision.action}: {decision.reason}")
    if args.html:
        _write_html(args.html, plans, str(args.inventory))
    failed = any(p.verdict == "does-not-fit" for p in plans)
    return 1 if args.strict and failed else 0


def _probes(values: list[str], hosts: list[str]) -> dict[str, ProbeReport]:
    """``--probe [HOST=]FILE`` values -> each host's parsed report (hostile files: the core parses them)."""
    out: dict[str, ProbeReport] = {}
    for value in values:
        name, sep, path = value.rpartition("=")
        if sep and name not in hosts:
            raise UsageError(f"--probe {value}: {name} is not a host of this inventory (or not selected)")
        try:
            report = parse_probe(Path(path).read_text(encoding="utf-8"), name)
        except (OSError, ProbeError) as err:
            raise UsageError(f"--probe {value}: {str(err).splitlines()[0]}") from None
        out.update({host: report for host in ([name] if sep else hosts)})
    return out


def _write_html(path: Path, plans: list[ServingPlan], inventory: str) -> None:
    from ms4fleet.planhtml import render_plan_html

    # Past a screenful, one section per host shape, as the table does.
    if len(plans) > _ROWS_PER_HOST_UP_TO:
        entries = [{**plan.to_dict(), "hosts": hosts} for hosts, plan in _rows_by_shape(plans)]
    else:
        entries = [plan.to_dict() for plan in plans]
    try:
        path.write_text(render_plan_html(entries, inventory), encoding="utf-8")
    except OSError as err:
        raise UsageError(f"--html {path}: {err.strerror or err}") from None
    print(f"plan: wrote {path}", file=sys.stderr)


def _print_api_keys(fleet: Fleet) -> None:
    sources: dict[str, list[str]] = {}
    for host in fleet:
        summary = api_key_summary(host.config)
        where = {
            "generated": f"generated on this controller ({summary.get('controller_file')}; "
            f"{'exists' if summary.get('exists') else 'created by the first deploy'}; `ms4fleet api-key` prints it)",
            "env": f"from ${summary.get('env')} on the controller",
            "file": f"the host's {summary['host_file']}",
            "open": "none: the endpoint is open (serving.open_endpoint)",
        }[str(summary["source"])]
        sources.setdefault(where, []).append(host.name)
    for where, hosts in sources.items():
        shown = ", ".join(hosts[:6]) + (f" and {len(hosts) - 6} more" if len(hosts) > 6 else "")
        print(f"API key: {where}: {shown}")


def _health_exclusions(path: Path) -> dict[str, tuple[Exclusion, ...]]:
    """Each host's GPU exclusions from a saved ``ms4fleet health --json`` (hostile: checked by the core)."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("host"), str) for r in rows):
            raise ValueError("expected the list `ms4fleet health --json` prints")
        return {r["host"]: exclusions_from_json(r.get("excluded") or [], r["host"]) for r in rows}
    except (ValueError, OSError) as err:  # HealthError and JSONDecodeError are ValueErrors
        raise UsageError(f"--health {path}: {str(err).splitlines()[0]}") from None


def _os_release(text: str) -> OsRelease:
    name, sep, version = text.partition(":")
    if not sep or not name or not version:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ID:VERSION_ID, e.g. ubuntu:24.04 or debian:12")
    return OsRelease(name.lower(), version)


def _print_plans(plans: list[ServingPlan], show_argv: bool) -> None:
    # Piped output (CI logs, less) gets a readable width instead of rich's 80-column fallback.
    probe = Console()
    console = probe if probe.is_terminal else Console(width=max(probe.width, 110))
    # Past a screenful, one row per host shape: 1,000 near-identical rows help nobody (--json has them all).
    rows = _rows_by_shape(plans) if len(plans) > _ROWS_PER_HOST_UP_TO else [([p.host], p) for p in plans]
    table = Table(title="ms4fleet plan", title_justify="left")
    table.add_column("hosts" if len(rows) < len(plans) else "host", no_wrap=True)
    table.add_column("GPUs", no_wrap=True)
    table.add_column("replicas", no_wrap=True)
    table.add_column("KV tokens", justify="right", no_wrap=True)
    table.add_column("full ctx", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for hosts, plan in rows:
        style = _VERDICT_STYLE[plan.verdict]
        table.add_row(
            hosts[0] if len(hosts) == 1 else f"{len(hosts)} hosts ({hosts[0]}, ...)",
            f"{plan.gpu_count}x {plan.gpu.id}",
            f"{len(plan.replicas)} x TP{plan.tp}" + (f" ({len(plan.missing)} left out)" if plan.missing else ""),
            f"{plan.sizing.kv_tokens:,}",
            str(plan.sizing.full_length_sequences),
            f"[{style}]{plan.verdict}[/{style}]",
        )
    console.print(table)
    models = sorted({f"{p.profile.display_name} @ {p.max_model_len:,} tokens" for p in plans})
    console.print(f"model: {', '.join(models)}; KV tokens and full-context sequences are per replica")
    margins = sorted({p.sizing.margin_bytes for p in plans})
    console.print(
        f"margin: {' / '.join(gib(m) for m in margins)} per GPU kept below vLLM's predicted KV budget (docs/sizing.md)",
        highlight=False,
    )
    # Hosts of the same shape share their notes: a 1,000-host fleet gets a handful of blocks, not 1,000.
    groups: dict[tuple[str, ...], list[str]] = {}
    for plan in plans:
        key = (
            plan.verdict,
            *plan.sizing.reasons,
            *("! " + w for w in plan.warnings),
            *("> " + a for a in plan.alternatives),
            *("x " + m.explanation for m in plan.missing),
        )
        groups.setdefault(key, []).append(plan.host)
    for (verdict, *notes), hosts in groups.items():
        style = _VERDICT_STYLE[verdict]
        shown = ", ".join(hosts[:6]) + (f" and {len(hosts) - 6} more" if len(hosts) > 6 else "")
        console.print(f"[bold]{shown}[/bold] [{style}]{verdict}[/{style}]")
        for note in notes:
            if note.startswith("! "):
                console.print(f"  ! {note[2:]}", markup=False, highlight=False, soft_wrap=True)
            elif note.startswith("> "):
                console.print(f"  > would fit: {note[2:]}", markup=False, highlight=False, soft_wrap=True)
            elif note.startswith("x "):
                console.print(f"  x {note[2:]}", markup=False, highlight=False, soft_wrap=True)
            else:
                console.print(f"  - {note}", markup=False, highlight=False, soft_wrap=True)
    if show_argv:
        for plan in plans:
            for replica in plan.replicas:
                console.print(f"{plan.host} replica {replica.index} (GPUs {replica.gpus}, port {replica.port}):")
                console.print("  vllm serve " + " ".join(replica.argv), soft_wrap=True, markup=False)


def _rows_by_shape(plans: list[ServingPlan]) -> list[tuple[list[str], ServingPlan]]:
    shapes: dict[str, tuple[list[str], ServingPlan]] = {}
    for plan in plans:
        key = json.dumps({k: v for k, v in plan.to_dict().items() if k != "host"}, sort_keys=True)
        shapes.setdefault(key, ([], plan))[0].append(plan.host)
    return list(shapes.values())


def run_size(args: argparse.Namespace) -> int:
    path: Path = args.model_config
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        shape = KvShape.from_model_config(config)
    except (ValueError, OSError) as err:
        raise UsageError(f"--model-config {path}: {err}") from None
    if args.tp < 1:
        raise UsageError("--tp must be 1 or more")
    if not 0 < args.util <= 1:
        raise UsageError(f"--util={args.util} must be in (0, 1]")
    per_token = kv_bytes_per_token(shape, args.kv_dtype, args.tp)
    max_model_len = args.max_model_len or _context_of(config)
    result: dict[str, Any] = {
        "model_config": str(path),
        "kv": shape.kind,
        "tp": args.tp,
        "kv_bytes_per_token": per_token,
    }
    if args.kv_cache_gib is not None:
        # vLLM's own conversion: whole 16-token blocks of every layer's page (no margin: the budget is exact).
        pinned = size(
            SizingInput(
                0, args.tp, 1.0, 0, shape, max_model_len, args.kv_dtype, kv_cache_bytes=int(args.kv_cache_gib * GIB)
            )
        )
        result |= {"kv_budget_gib": args.kv_cache_gib, "kv_tokens": pinned.kv_tokens}
    else:
        if args.gpu is not None:
            kind = gpu_kinds()[args.gpu]
            total, name = kind.cuda_memory_bytes, kind.name
        elif args.gpu_mem_gib is not None:
            total, name = int(args.gpu_mem_gib * GIB), ""
        else:
            raise UsageError("--gpu or --gpu-mem-gib is required unless --kv-cache-gib pins the KV budget")
        weights = int(args.weights_gib * GIB) if args.weights_gib is not None else _weights_beside(path)
        try:
            model: ModelShape | None = ModelShape.from_model_config(config)
        except ValueError:
            model = None  # the sizing falls back to a wide, large-vocabulary model: a high reserve
        batched = args.max_num_batched_tokens or vllm_default_max_num_batched_tokens(total, name)
        seqs = args.max_num_seqs or vllm_default_max_num_seqs(total, name)
        sizing = size(
            SizingInput(
                gpu_memory_bytes=total,
                tp=args.tp,
                gpu_memory_utilization=args.util,
                weight_bytes=weights,
                kv=shape,
                max_model_len=max_model_len,
                kv_cache_dtype=args.kv_dtype,
                max_num_batched_tokens=batched,
                cuda_graphs=not args.enforce_eager,
                model=model,
                max_num_seqs=seqs,
                vllm_version=args.vllm_version,
                gpu_name=name,
            )
        )
        result |= {
            "max_num_batched_tokens": batched,
            "max_num_seqs": seqs,
            "kv_budget_gib": round(sizing.kv_budget_bytes / GIB, 3),
            "margin_gib": round(sizing.margin_bytes / GIB, 3),
            "kv_tokens": sizing.kv_tokens,
            "max_model_len": max_model_len,
            "full_length_sequences": sizing.full_length_sequences,
            "max_fitting_model_len": sizing.max_fitting_model_len,
            "weights_per_gpu_gib": round(sizing.weights_per_gpu_bytes / GIB, 3),
            "reserve_gib": round(sizing.reserve_bytes / GIB, 3),
            "activation_gib": round(sizing.activation_bytes / GIB, 3),
            "non_torch_gib": round(sizing.non_torch_bytes / GIB, 3),
            "cuda_graph_gib": round(sizing.cuda_graph_bytes / GIB, 3),
            "verdict": sizing.verdict,
            "reasons": list(sizing.reasons),
        }
    if args.json:
        print_json(result)
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


def _context_of(config: dict[str, Any]) -> int:
    cfg = config.get("text_config") or config
    for key in ("max_position_embeddings", "max_seq_len", "seq_len"):
        if isinstance(cfg.get(key), int):
            return int(cfg[key])
    return 8192


def _weights_beside(config_path: Path) -> int:
    """The checkpoint's tensor bytes beside the config: its safetensors index, else every shard's header."""
    folder = config_path.parent
    files = sorted(folder.glob("*.safetensors.index.json")) or sorted(folder.glob("*.safetensors"))
    if not files:
        raise UsageError(f"--weights-gib is required: no safetensors index or shards beside {config_path}")
    try:
        return safetensors_weight_bytes(files)
    except (OSError, ValueError, KeyError, struct.error) as err:
        raise UsageError(f"--weights-gib is required: {files[0].name} is not readable ({err})") from None
