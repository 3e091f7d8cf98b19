#!/usr/bin/env bash
# `make demo`: the main job, end to end, on a local simulated fleet of GPU hosts.
#   1. plan the example fleet (no host touched)
#   2. bring up 3 simulated hosts with 8 x H200 each (systemd, sshd, apt, Docker in containers)
#   3. serve the weights from a loopback mirror and ship the vLLM image as an archive (no registry here)
#   4. pyinfra -y inventory/sim.py deploy.py: provision, fetch, serve, verify
#   5. run it again: nothing changes
# The fleet stays up afterwards for a look around (`ms4fleet sim status`); `ms4fleet sim down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${MS4FLEET_DEMO_MIRROR_PORT:-8765}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

scripts/ensure-docker.sh >/dev/null

say "1. What every host of the example fleet will serve (nothing is touched)"
"$BIN/ms4fleet" plan inventory/example.py

say "2. A simulated fleet: 3 hosts x 8 H200"
"$BIN/ms4fleet" sim up --hosts 3 --gpus h200x8

say "3. Weights from a loopback mirror; the vLLM image as an archive"
"$BIN/python" -m ms4fleet_sim.weights_mirror .sim/mirror --port "$PORT" >.sim/mirror.log 2>&1 &
mirror=$!
trap 'kill $mirror 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.2; done
"$BIN/python" -c 'from pathlib import Path; from ms4fleet_sim import inventories, standin_image
print(inventories.STANDIN_IMAGE, "->", standin_image.save_archive(Path(".sim/vllm-image.tar")))'
export MS4FLEET_SIM_MIRROR="http://127.0.0.1:$PORT"

say "4. Plan the simulated fleet, then provision, fetch, serve and verify it"
"$BIN/ms4fleet" plan inventory/sim.py
"$BIN/pyinfra" -y inventory/sim.py deploy.py

say "5. Converge again: nothing changes"
"$BIN/pyinfra" -y inventory/sim.py deploy.py

say "Done: 'ms4fleet sim status' shows the fleet, 'ms4fleet sim down' removes it"
