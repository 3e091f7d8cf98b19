#!/bin/sh
# `pyinfra @local deploy.py --dry` on the real H200 host (Ubuntu 24.04, driver from the VM image, no
# systemd), idle and with a co-tenant holding 120 GiB of the GPU. Run by the device tool from the repository
# root with the wheels of .whl/ carried; outputs land in $OUT. Then the quick converged check's script as
# pyinfra would send it, run here: its fingerprint and live sections on real Ubuntu 24.04 and a real driver.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 MS4FLEET_CACHE_DIR=/tmp/verdicts
dry() {
    python3 -c 'import sys; from pyinfra_cli.main import main; sys.argv[0] = "pyinfra"; sys.exit(main())' \
        @local deploy.py --dry \
        --data 'ms4fleet_gpu={"kind": "h200-sxm", "count": 1}' \
        --data 'ms4fleet_provision={"manage_driver": false}' \
        --data 'ms4fleet_weights={"source": "path", "path": "/srv/ms4fleet/share", "revision": "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"}'
}
{ date -u +%FT%TZ; grep -E '^(PRETTY_NAME|VERSION_ID)=' /etc/os-release; ps -o comm= -p 1; } > "$OUT/meta.txt"
/usr/local/nvidia/bin/nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
start=$(date +%s)
dry > "$OUT/pyinfra-dry-idle.txt" 2>&1; echo "idle exit $? seconds $(( $(date +%s) - start ))" >> "$OUT/meta.txt"
python3 -c '
import time, torch
held = torch.empty(120 * 2**30, dtype=torch.uint8, device="cuda")
open("/tmp/cotenant-ready", "w").close()
time.sleep(240)
' &
cotenant=$!
for _ in $(seq 120); do [ -e /tmp/cotenant-ready ] && break; sleep 1; done
dry > "$OUT/pyinfra-dry-cotenant.txt" 2>&1; echo "cotenant exit $?" >> "$OUT/meta.txt"
kill "$cotenant"
# No verdict: this host is not converged (no Docker, no units), so the dry runs stored none.
echo "verdicts stored: $(ls /tmp/verdicts 2>/dev/null | wc -l)" >> "$OUT/meta.txt"
python3 - > "$OUT/quick-check.sh" <<'EOF'
from pathlib import Path

from ms4fleet.config import HostConfig
from ms4fleet.provision import OsRelease, provision_plan
from ms4fleet.serving import plan_host
from ms4fleet.weights.request import request_for_host
from ms4fleet.converged import Desired, quick_script

config = HostConfig.from_host_data("@local", {
    "ms4fleet_gpu": {"kind": "h200-sxm", "count": 1},
    "ms4fleet_provision": {"manage_driver": False},
    "ms4fleet_weights": {"source": "path", "path": "/srv/ms4fleet/share", "revision": "5e" * 20},
})
os_release = OsRelease.parse(Path("/etc/os-release").read_text())
print(quick_script(Desired(config, provision_plan(config, os_release), plan_host(config), request_for_host(config))))
EOF
sh "$OUT/quick-check.sh" > "$OUT/quick-check-output.txt" 2>&1; echo "quick check exit $?" >> "$OUT/meta.txt"
