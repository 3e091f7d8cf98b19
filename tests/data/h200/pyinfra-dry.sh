#!/bin/sh
# `pyinfra @local deploy.py --dry` on the real H200 host (Ubuntu 24.04, driver from the VM image, no
# systemd), idle and with a co-tenant holding 120 GiB of the GPU. Run by the device tool from the repository
# root with the wheels of .whl/ carried; outputs land in $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
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
