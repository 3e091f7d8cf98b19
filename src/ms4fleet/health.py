"""GPU health verdicts: the readings of ``ms4fleet/hostside/health.py`` judged by one set of rules.

Each GPU gets ``healthy``, ``degraded`` (serves, with a warning) or ``unhealthy`` (excluded from serving),
with every finding's reason and fix. A reading the driver does not answer is listed as unsupported and
judged neither way; a reading that failed is a ``degraded`` finding (we could not look, so we say so).

+ ``parse_health(text, host)``: the hostside JSON -> ``HealthReport``; raises ``HealthError`` (one line).
+ ``HealthReport.usable``: indices of the GPUs a replica may be placed on.
+ ``exclusions(report, gpu_count)``: what the plan leaves out (``Exclusion``: GPU and reason); the serving
  plan places replicas around them (``ms4fleet.serving.plan_host(config, excluded=...)``).
+ ``gate(report, gpu_count, planned)``: the GPUs a planned replica uses that are excluded now (the deploy's,
  the rollout's and ``ms4fleet status``'s gate).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

Json = Mapping[str, Any]


class Verdict(IntEnum):
    """Ordered: a GPU's verdict is its worst finding's."""

    HEALTHY = 0
    DEGRADED = 1
    UNHEALTHY = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    check: str
    verdict: Verdict
    reason: str
    fix: str


@dataclass(frozen=True)
class XidClass:
    verdict: Verdict
    meaning: str
    fix: str


_RESET = "drain it, then reset the GPU (nvidia-smi -r -i {i}) or reboot"
_RMA = "drain it and replace the GPU (open an RMA with the serial from nvidia-smi -q)"
# Xids that say the GPU itself is at fault (NVIDIA's Xid catalog). Application faults (13, 31, 43, 45 ...)
# are a process's problem, not the GPU's: they are listed in the report and judged neither way.
XIDS: Mapping[int, XidClass] = {
    48: XidClass(Verdict.UNHEALTHY, "double-bit ECC error", _RESET),
    61: XidClass(Verdict.UNHEALTHY, "internal micro-controller breakpoint/warning", _RESET),
    62: XidClass(Verdict.UNHEALTHY, "internal micro-controller halt", _RESET),
    63: XidClass(Verdict.DEGRADED, "ECC page retirement or row remapping recorded", "reset the GPU at the next drain"),
    64: XidClass(Verdict.UNHEALTHY, "ECC page retirement or row remapping failed", _RMA),
    74: XidClass(
        Verdict.UNHEALTHY, "NVLink error", "check the NVLink/NVSwitch fabric and fabric manager, then " + _RESET
    ),
    79: XidClass(
        Verdict.UNHEALTHY, "GPU has fallen off the bus", "drain it and reboot; check the slot, riser and power"
    ),
    92: XidClass(
        Verdict.DEGRADED, "high single-bit ECC error rate", "watch the ECC counters; replace the GPU if they grow"
    ),
    94: XidClass(Verdict.DEGRADED, "contained ECC error", "the affected process was stopped; " + _RESET),
    95: XidClass(Verdict.UNHEALTHY, "uncontained ECC error", _RESET),
    119: XidClass(Verdict.UNHEALTHY, "GSP RPC timeout", _RESET),
    120: XidClass(Verdict.UNHEALTHY, "GSP error", _RESET),
    140: XidClass(Verdict.UNHEALTHY, "unrecovered ECC error", _RESET),
}
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 69, 109})
# Clocks event reasons that mean the hardware is protecting itself; software power capping under load is normal.
UNHEALTHY_CLOCK_REASONS = ("hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
DEGRADED_CLOCK_REASONS = ("sw_thermal_slowdown",)
# NVIDIA's replacement guidance for page retirement: 60 or more retired pages.
RETIRED_PAGES_LIMIT = 60


class HealthError(ValueError):
    """The health reading of a host could not be used (one line)."""


@dataclass(frozen=True)
class GpuHealth:
    index: int
    uuid: str
    bus: str
    verdict: Verdict
    findings: tuple[Finding, ...]
    unsupported: tuple[str, ...]
    readings: Json

    @property
    def summary(self) -> str:
        worst = [f for f in self.findings if f.verdict == self.verdict]
        return "; ".join(f.reason for f in worst) if worst else "all supported checks passed"


@dataclass(frozen=True)
class HealthReport:
    host: str
    source: str | None
    driver_version: str | None
    gpus: tuple[GpuHealth, ...]
    errors: tuple[str, ...]

    @property
    def usable(self) -> tuple[int, ...]:
        return tuple(g.index for g in self.gpus if g.verdict < Verdict.UNHEALTHY)

    @property
    def excluded(self) -> tuple[GpuHealth, ...]:
        return tuple(g for g in self.gpus if g.verdict == Verdict.UNHEALTHY)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "source": self.source,
            "driver_version": self.driver_version,
            "errors": list(self.errors),
            "gpus": [
                {
                    "index": g.index,
                    "uuid": g.uuid,
                    "bus": g.bus,
                    "verdict": str(g.verdict),
                    "findings": [
                        {"check": f.check, "verdict": str(f.verdict), "reason": f.reason, "fix": f.fix}
                        for f in g.findings
                    ],
                    "unsupported": list(g.unsupported),
                }
                for g in self.gpus
            ],
        }


@dataclass(frozen=True, order=True)
class Exclusion:
    """A GPU the plan places no replica on, and why (one line, for ``ms4fleet plan`` and the engines' logs)."""

    gpu: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "reason": self.reason}


def exclusions(report: HealthReport, gpu_count: int) -> tuple[Exclusion, ...]:
    """The host's GPUs ``0..gpu_count-1`` that may not serve: each unhealthy one (its worst findings), and each
    the driver did not list at all (a GPU that fell off the bus is missing, not unhealthy, in NVML)."""
    seen = {g.index for g in report.gpus}
    out = [Exclusion(g.index, f"unhealthy: {g.summary}") for g in report.excluded if g.index < gpu_count]
    if report.gpus:
        out += [
            Exclusion(i, f"not listed by {report.source} ({len(seen)} of {gpu_count} GPUs answered)")
            for i in range(gpu_count)
            if i not in seen
        ]
    return tuple(sorted(out))


def exclusions_from_json(value: Any, host: str) -> tuple[Exclusion, ...]:
    """Exclusions read back from an engine's variable (``[{"gpu": 3, "reason": "..."}]``); hostile until checked."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(e, Mapping)
        and isinstance(e.get("gpu"), int)
        and not isinstance(e.get("gpu"), bool)
        and 0 <= e["gpu"] < 64
        and isinstance(e.get("reason"), str)
        for e in value
    ):
        raise HealthError(f"{host}: GPU exclusions must be a list of {{gpu: 0..63, reason: text}}")
    return tuple(sorted({Exclusion(int(e["gpu"]), " ".join(str(e["reason"]).split())[:300]) for e in value}))


def gate(report: HealthReport, gpu_count: int, planned: Mapping[int, Iterable[int]]) -> tuple[str, ...]:
    """The gate before a replica starts, is replaced or rejoins: one line per planned replica (index -> its
    GPUs) that would use a GPU excluded now; empty when every planned GPU may serve."""
    now = {e.gpu: e.reason for e in exclusions(report, gpu_count)}
    out = []
    for index, gpus in sorted(planned.items()):
        bad = [f"GPU {g} {now[g]}" for g in gpus if g in now]
        if bad:
            out.append(
                f"{report.host}: replica {index} would run on {'; '.join(bad)}: not started; "
                "the next deploy plans its replicas on the healthy GPUs only"
            )
    return tuple(out)


def script_path() -> Path:
    return Path(__file__).with_name("hostside") / "health.py"


def parse_health(text: str, host: str) -> HealthReport:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise HealthError(f"{host}: the GPU health reading is not JSON ({err.msg} at char {err.pos})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("gpus"), list):
        raise HealthError(f"{host}: the GPU health reading has no 'gpus' list")
    if raw.get("source") is None:
        detail = "; ".join(map(str, raw.get("errors") or [])) or "no NVML and no nvidia-smi"
        raise HealthError(f"{host}: no GPU driver answered the health check ({detail})")
    kernel = raw.get("kernel_xids") or {}
    kernel_xids = kernel.get("value", {}) if kernel.get("status") == "ok" else {}
    watched = (raw.get("xid_watch") or {}).get("events") or {}
    host_findings = _dcgm_findings(raw.get("dcgm") or {})
    gpus = tuple(
        judge_gpu(g, kernel_xids.get(g.get("pci_bus_id"), []), watched.get(g.get("pci_bus_id"), []), host_findings)
        for g in raw["gpus"]
    )
    return HealthReport(host, raw["source"], raw.get("driver_version"), gpus, tuple(map(str, raw.get("errors") or [])))


def judge_gpu(
    gpu: Json, kernel_xids: list[Json], watched_xids: list[int], host_findings: tuple[Finding, ...] = ()
) -> GpuHealth:
    """One GPU's readings -> its verdict. ``kernel_xids``: ``{"xid", "message"}`` lines since boot for its
    bus; ``watched_xids``: critical Xids NVML delivered while the reader watched; ``host_findings``: what
    holds for every GPU of the host (a failed DCGM diagnostic)."""
    index = int(gpu["index"])
    readings: Json = gpu.get("readings") or {}
    findings: list[Finding] = []
    unsupported = []
    for name, reading in sorted(readings.items()):
        status = reading.get("status")
        if status == "unsupported":
            unsupported.append(name)
        elif status == "error":
            findings.append(
                Finding(
                    name,
                    Verdict.DEGRADED,
                    f"{name} could not be read ({reading.get('detail')})",
                    "check the driver and NVML",
                )
            )
        elif status == "ok" and name in _RULES:
            findings.extend(_RULES[name](reading["value"], index, readings))
    findings.extend(_xid_findings(index, [int(x["xid"]) for x in kernel_xids], "kernel log since boot"))
    findings.extend(_xid_findings(index, watched_xids, "NVML event while watching"))
    findings.extend(host_findings)
    verdict = max((f.verdict for f in findings), default=Verdict.HEALTHY)
    return GpuHealth(
        index,
        str(gpu.get("uuid", "")),
        str(gpu.get("pci_bus_id", "")),
        verdict,
        tuple(findings),
        tuple(unsupported),
        readings,
    )


def _dcgm_findings(reading: Json) -> tuple[Finding, ...]:
    """A failed ``dcgmi diag`` excludes the host's GPUs: its text output is for people, so which GPU failed
    is left to its own report (the tail is quoted); an error running it is a warning."""
    if reading.get("status") == "error":
        return (Finding("dcgm", Verdict.DEGRADED, f"dcgmi diag could not run ({reading.get('detail')})", "check DCGM"),)
    value = reading.get("value") or {}
    if reading.get("status") == "ok" and not value.get("passed"):
        tail = " | ".join(value.get("output_tail") or [])[-300:]
        reason = f"dcgmi diag -r {value.get('level')} failed (exit {value.get('exit')}): {tail}"
        return (
            Finding("dcgm", Verdict.UNHEALTHY, reason, "read `dcgmi diag -r 3` output, then reset or replace the GPU"),
        )
    return ()


def _xid_findings(index: int, xids: list[int], where: str) -> list[Finding]:
    out = []
    for xid in sorted(set(xids)):
        if xid in APPLICATION_XIDS:
            continue
        known = XIDS.get(xid)
        if known is None:
            out.append(Finding("xid", Verdict.DEGRADED, f"Xid {xid} ({where})", "look it up in NVIDIA's Xid catalog"))
        else:
            out.append(
                Finding("xid", known.verdict, f"Xid {xid}: {known.meaning} ({where})", known.fix.format(i=index))
            )
    return out


Rule = Callable[[Any, int, Json], list[Finding]]


def _ecc_mode(value: Json, i: int, _: Json) -> list[Finding]:
    if not value.get("current"):
        return [
            Finding("ecc_mode", Verdict.DEGRADED, "ECC is off", f"nvidia-smi -i {i} -e 1, then reset the GPU or reboot")
        ]
    if not value.get("pending"):
        return [
            Finding("ecc_mode", Verdict.DEGRADED, "ECC will be off after the next reset", f"nvidia-smi -i {i} -e 1")
        ]
    return []


def _ecc_uncorrected_volatile(value: int, i: int, _: Json) -> list[Finding]:
    if value > 0:
        reason = f"{value} uncorrectable ECC error(s) since the last reset"
        return [Finding("ecc_uncorrected_volatile", Verdict.UNHEALTHY, reason, _RESET.format(i=i))]
    return []


def _ecc_uncorrected_aggregate(value: int, i: int, readings: Json) -> list[Finding]:
    volatile = (readings.get("ecc_uncorrected_volatile") or {}).get("value") or 0
    if value > 0 and volatile == 0:
        reason = f"{value} uncorrectable ECC error(s) in its lifetime"
        return [
            Finding(
                "ecc_uncorrected_aggregate", Verdict.DEGRADED, reason, "watch it; replace the GPU if the count grows"
            )
        ]
    return []


def _retired_pages(value: Json, i: int, _: Json) -> list[Finding]:
    out = []
    if value.get("pending"):
        out.append(Finding("retired_pages", Verdict.UNHEALTHY, "a page retirement is pending", _RESET.format(i=i)))
    total = int(value.get("single_bit", 0)) + int(value.get("double_bit", 0))
    if total >= RETIRED_PAGES_LIMIT:
        out.append(Finding("retired_pages", Verdict.DEGRADED, f"{total} retired pages", _RMA))
    return out


def _row_remap(value: Json, i: int, _: Json) -> list[Finding]:
    if value.get("failure"):
        return [Finding("row_remap", Verdict.UNHEALTHY, "row remapping failed", _RMA)]
    if value.get("pending"):
        return [Finding("row_remap", Verdict.UNHEALTHY, "a row remap is pending", _RESET.format(i=i))]
    return []


def _row_remap_histogram(value: Json, i: int, _: Json) -> list[Finding]:
    if int(value.get("none", 0)) > 0:
        reason = f"{value['none']} memory bank(s) have no spare rows left"
        return [Finding("row_remap_histogram", Verdict.DEGRADED, reason, "plan the GPU's replacement")]
    return []


def _pcie_link(value: Json, i: int, readings: Json) -> list[Finding]:
    out = []
    if value["width_current"] < value["width_max"]:
        reason = f"PCIe link trained at x{value['width_current']} of x{value['width_max']}"
        out.append(Finding("pcie_link", Verdict.DEGRADED, reason, "reseat the GPU or riser, then reboot"))
    reasons = ((readings.get("clocks_event_reasons") or {}).get("value") or {}).get("active") or []
    # An idle GPU may lower its link generation to save power: only a busy one is judged on it.
    if value["gen_current"] < value["gen_max"] and "gpu_idle" not in reasons:
        reason = f"PCIe link at gen {value['gen_current']} of {value['gen_max']} while busy"
        out.append(Finding("pcie_link", Verdict.DEGRADED, reason, "check the slot and BIOS PCIe settings, then reboot"))
    return out


def _pcie_replay_growth(value: int, i: int, _: Json) -> list[Finding]:
    if value > 0:
        reason = f"PCIe replay counter grew by {value} while watching"
        return [Finding("pcie_replay_growth", Verdict.DEGRADED, reason, "check the slot, riser and cabling")]
    return []


def _nvlink(value: list[Json], i: int, _: Json) -> list[Finding]:
    down = [str(link["link"]) for link in value if not link.get("active")]
    if down:
        reason = f"NVLink link(s) {', '.join(down)} inactive"
        return [
            Finding(
                "nvlink", Verdict.UNHEALTHY, reason, "check the fabric manager and NVLink, then " + _RESET.format(i=i)
            )
        ]
    return []


def _clocks(value: Json, i: int, _: Json) -> list[Finding]:
    active = value.get("active") or []
    out = []
    hard = [r for r in UNHEALTHY_CLOCK_REASONS if r in active]
    if hard:
        reason = f"clocks held down by {', '.join(hard)}"
        out.append(
            Finding("clocks_event_reasons", Verdict.UNHEALTHY, reason, "check cooling and power delivery; drain it")
        )
    soft = [r for r in DEGRADED_CLOCK_REASONS if r in active]
    if soft:
        out.append(
            Finding("clocks_event_reasons", Verdict.DEGRADED, f"clocks held down by {', '.join(soft)}", "check cooling")
        )
    return out


def _temperature(value: Json, i: int, _: Json) -> list[Finding]:
    gpu, slowdown, shutdown = value.get("gpu_c"), value.get("slowdown_c"), value.get("shutdown_c")
    margin, slowdown_margin = value.get("tlimit_margin_c"), value.get("slowdown_margin_c")
    if gpu is not None and shutdown is not None and gpu >= shutdown:
        return [
            Finding(
                "temperature", Verdict.UNHEALTHY, f"{gpu} C at its shutdown limit ({shutdown} C)", "check cooling now"
            )
        ]
    at_slowdown = (gpu is not None and slowdown is not None and gpu >= slowdown) or (
        margin is not None and margin <= (slowdown_margin if slowdown_margin is not None else 0)
    )
    if at_slowdown:
        reason = f"{gpu} C at its slowdown limit" + (f" ({slowdown} C)" if slowdown is not None else "")
        return [Finding("temperature", Verdict.DEGRADED, reason, "check cooling and airflow")]
    return []


def _persistence(value: bool, i: int, _: Json) -> list[Finding]:
    if not value:
        return [
            Finding(
                "persistence", Verdict.DEGRADED, "persistence mode is off", "systemctl enable --now nvidia-persistenced"
            )
        ]
    return []


def _mig(value: Json, i: int, _: Json) -> list[Finding]:
    if value.get("current"):
        reason = "MIG is on (replicas use whole GPUs)"
        return [Finding("mig", Verdict.UNHEALTHY, reason, f"nvidia-smi -i {i} -mig 0, then reset the GPU")]
    if value.get("pending"):
        return [Finding("mig", Verdict.DEGRADED, "MIG turns on at the next reset", f"nvidia-smi -i {i} -mig 0")]
    return []


def _fabric(value: Json, i: int, _: Json) -> list[Finding]:
    fix = "systemctl restart nvidia-fabricmanager and check its log; the fabric must reach 'completed'"
    if value.get("state") != "completed":
        return [Finding("fabric", Verdict.UNHEALTHY, f"NVLink fabric state is {value.get('state')}", fix)]
    if value.get("status") not in (0, None, "Success"):
        return [Finding("fabric", Verdict.UNHEALTHY, f"NVLink fabric status is {value.get('status')}", fix)]
    return []


_RULES: Mapping[str, Rule] = {
    "ecc_mode": _ecc_mode,
    "ecc_uncorrected_volatile": _ecc_uncorrected_volatile,
    "ecc_uncorrected_aggregate": _ecc_uncorrected_aggregate,
    "retired_pages": _retired_pages,
    "row_remap": _row_remap,
    "row_remap_histogram": _row_remap_histogram,
    "pcie_link": _pcie_link,
    "pcie_replay_growth": _pcie_replay_growth,
    "nvlink": _nvlink,
    "clocks_event_reasons": _clocks,
    "temperature": _temperature,
    "persistence": _persistence,
    "mig": _mig,
    "fabric": _fabric,
}
