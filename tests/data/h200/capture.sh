#!/usr/bin/env bash
# How the captures in this folder were made: run once on the accelerator machine (1 x H200) with the repo
# as working directory; everything lands in one archive under $OUT (the runner returns at most 8 files).
# Steps: raw nvidia-smi outputs and the probe (NVML path, nvidia-smi path, PCI path) on the idle GPU, then
# the same with a co-tenant process holding ~100 GiB through a plain torch allocation.
set -u
out="${OUT:?}/h200"
mkdir -p "$out"
export PATH="$PATH:/usr/local/nvidia/bin"
probe=src/ms4fleet/hostside/probe.py
fields=$(python3 -c "import sys; sys.path.insert(0, 'src/ms4fleet/hostside'); import probe; print(','.join(probe.QUERY_GPU_FIELDS))")
apps=$(python3 -c "import sys; sys.path.insert(0, 'src/ms4fleet/hostside'); import probe; print(','.join(probe.QUERY_APPS_FIELDS))")

snapshot() {  # $1 = phase name
    nvidia-smi >"$out/nvidia-smi-$1.txt" 2>&1
    nvidia-smi --query-gpu="$fields" --format=csv,noheader,nounits >"$out/query-gpu-$1.csv" 2>&1
    nvidia-smi --query-compute-apps="$apps" --format=csv,noheader,nounits >"$out/query-apps-$1.csv" 2>&1
    python3 "$probe" --source nvml --indent 1 >"$out/probe-nvml-$1.json" 2>"$out/probe-nvml-$1.err"
    python3 "$probe" --source nvidia-smi --indent 1 >"$out/probe-nvidia-smi-$1.json" 2>"$out/probe-nvidia-smi-$1.err"
}

{
    date -u +%Y-%m-%dT%H:%M:%SZ
    uname -a
    python3 --version
    python3 -c "import pynvml; print('nvidia-ml-py', getattr(pynvml, '__version__', '?'))" 2>&1
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" 2>&1
    echo "query-gpu fields: $fields"
    echo "query-apps fields: $apps"
    command -v lspci modinfo systemctl 2>&1
    ls /proc/driver/nvidia-nvswitch/devices 2>&1
} >"$out/meta.txt"
cat /proc/driver/nvidia/version >"$out/proc-driver-nvidia-version.txt" 2>&1
modinfo -F license nvidia >"$out/modinfo-license.txt" 2>&1
lspci -Dn -d 10de: >"$out/lspci.txt" 2>&1
nvidia-smi -q >"$out/nvidia-smi-q-idle.txt" 2>&1
python3 "$probe" --source pci --indent 1 >"$out/probe-pci-idle.json" 2>&1
python3 "$probe" --indent 1 >"$out/probe-auto-idle.json" 2>&1
snapshot idle

# Co-tenant: ~100 GiB held by a plain cudaMalloc (torch's caching allocator), then probe again.
python3 - >"$out/cotenant.log" 2>&1 <<'PY' &
import os, time, torch
held = torch.empty(100 * 2**30, dtype=torch.uint8, device="cuda")
held.fill_(1)
torch.cuda.synchronize()
print("pid", os.getpid(), "holding", held.numel(), flush=True)
open("/tmp/cotenant.ready", "w").write(str(os.getpid()))
time.sleep(300)
PY
cotenant=$!
for _ in $(seq 1 120); do [ -f /tmp/cotenant.ready ] && break; sleep 0.5; done
snapshot cotenant
nvidia-smi -q >"$out/nvidia-smi-q-cotenant.txt" 2>&1
kill "$cotenant"; wait "$cotenant" 2>/dev/null
tar -C "${OUT}" -czf "${OUT}/h200-captures.tar.gz" h200 && rm -rf "$out"
ls -la "${OUT}"
