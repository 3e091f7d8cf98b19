#!/usr/bin/env bash
# `make demo`: the main job, end to end, on a local simulated fleet of GPU hosts, with the documented commands:
#   1. ms4fleet plan inventory/example.py          what every host of the example fleet will serve (no host touched)
#   2. ms4fleet sim up --hosts 3 --gpus h200x8     3 hosts x 8 H200, with the fleet's weights mirror and registry
#   3. pyinfra -y inventory/sim.py deploy.py       provision, fetch, serve, verify
#   4. the same command again                      nothing changes
# The fleet stays up afterwards for a look around (`ms4fleet sim status`); `ms4fleet sim down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/.venv/bin:$PATH"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Docker engine, debootstrap, rsync, ssh, ...: installed when missing (the simulated fleet needs them).
scripts/ensure-docker.sh

say "1. What every host of the example fleet will serve (nothing is touched)"
ms4fleet plan inventory/example.py

say "2. A simulated fleet: 3 hosts x 8 H200, a weights mirror and a registry"
ms4fleet sim up --hosts 3 --gpus h200x8
ms4fleet sim status

say "3. Provision, fetch, serve and verify: pyinfra -y inventory/sim.py deploy.py"
pyinfra -y inventory/sim.py deploy.py

say "4. The same command again: nothing changes"
pyinfra -y inventory/sim.py deploy.py

say "Done: 'ms4fleet sim status' shows the fleet, 'ms4fleet sim down' removes it"
