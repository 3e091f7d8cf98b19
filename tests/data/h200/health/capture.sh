#!/usr/bin/env bash
# How the files here were made: one run on the accelerator machine (1 x H200, driver 580.159.04, Ubuntu 24.04
# VM, nvidia-ml-py and torch present), output under $OUT. It runs the core's hostside health reader through
# NVML (watching Xid events and PCIe replays for 5 s) and through nvidia-smi, keeps nvidia-smi's raw answers
# for the same fields (replayed by tests/unit/test_health.py), and runs the NCCL burn-in's single-rank path
# (burnin-1gpu.json: NCCL's own version line, then the burn-in's JSON line).
set -o pipefail
export PATH="$PATH:/usr/local/nvidia/bin"
h=src/ms4fleet/hostside
log="$OUT/stderr.log"
python3 $h/health.py --source nvml --watch-s 5 > "$OUT/health-nvml.json" 2>> "$log"
python3 $h/health.py --source nvidia-smi > "$OUT/health-smi.json" 2>> "$log"
fields=$(python3 -c "import sys; sys.path.insert(0, '$h'); import health; print(','.join(health.SMI_FIELDS))")
# The remapper's counters as their own query asks for them: the reader takes them from -q (test_health.py
# checks that both said the same).
remap=gpu_bus_id,remapped_rows.correctable,remapped_rows.uncorrectable,remapped_rows.pending,remapped_rows.failure
nvidia-smi --query-gpu="$fields" --format=csv,noheader,nounits > "$OUT/smi-query.csv" 2>> "$log"
nvidia-smi --query-remapped-rows="$remap" --format=csv,noheader,nounits > "$OUT/smi-remap.csv" 2>> "$log"
nvidia-smi -q > "$OUT/smi-q.txt" 2>> "$log"
python3 $h/burnin.py --gpus 0 --bytes 268435456 --iters 50 > "$OUT/burnin-1gpu.json" 2>> "$log"
echo "burnin rc=$?"
python3 -c "import json; r = json.load(open('$OUT/health-nvml.json')); print(r['source'], r['errors']); print(json.dumps(r['gpus'][0]['readings'], sort_keys=True))"
tail -5 "$log"; cat "$OUT/smi-remap.csv"
