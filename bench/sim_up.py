"""Benchmark `ms4fleet sim up --hosts 3 --gpus h200x8`: cold (images and apt repository built) vs warm (cached).

The cold run builds into a private cache directory and image namespace, so it measures a fresh machine
without touching the shared cache other users of this machine rely on; its images are removed afterwards.
The warm run uses the shared cache (building it first if it is missing, outside the timing).

    .venv/bin/python bench/sim_up.py            # warm only (fast)
    .venv/bin/python bench/sim_up.py --cold     # cold and warm (several minutes)

Prints one JSON object and writes it to bench/results/sim_up.json. Target: warm under 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM_TARGET_S = 30.0


def sim(*args: str, env: dict[str, str] | None = None, project: Path) -> float:
    """Run `python -m ms4fleet_sim ARGS` and return its wall time; exit on failure."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "ms4fleet_sim", *args, "--root", str(project)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"ms4fleet sim {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def up_down(project: Path, env: dict[str, str] | None = None) -> float:
    args = ("--fleet", "bench", "--hosts", "3", "--gpus", "h200x8")
    try:
        return sim("up", *args, env=env, project=project)
    finally:
        sim("down", "--fleet", "bench", env=env, project=project)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="also time a cold start (builds everything)")
    args = parser.parse_args()
    results: dict[str, object] = {"hosts": 3, "gpus": "h200x8", "cpus": os.cpu_count()}
    cold_s: float | None = None
    with tempfile.TemporaryDirectory(prefix="ms4fleet-bench-") as tmp:
        project = Path(tmp)
        if args.cold:
            cache = Path(tmp) / "cache"
            namespace = f"ms4fleet-sim-bench-{os.getpid()}"
            env = {"MS4FLEET_SIM_CACHE": str(cache), "MS4FLEET_SIM_IMAGE_NAMESPACE": namespace}
            try:
                cold_s = up_down(project, env)
            finally:
                images = subprocess.run(
                    ["docker", "images", "-q", f"{namespace}/*"], capture_output=True, text=True, check=False
                ).stdout.split()
                if images:
                    subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, check=False)
                shutil.rmtree(cache, ignore_errors=True)
        # Fill the shared cache outside the timing, then time an up that only starts containers.
        sim("build", project=project)
        warm_s = up_down(project)
    if cold_s is not None:
        results["cold_s"] = round(cold_s, 1)
        results["cold_over_warm"] = round(cold_s / warm_s, 1)
    results.update(warm_s=round(warm_s, 1), warm_target_s=WARM_TARGET_S, warm_ok=warm_s < WARM_TARGET_S)
    out = ROOT / "bench" / "results" / "sim_up.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0 if results["warm_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
