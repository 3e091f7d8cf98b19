#!/usr/bin/env bash
# Make sure a Python can create virtual environments: `scripts/ensure-python-venv.sh [PYTHON]` (default python3).
#
# Debian and Ubuntu ship `python3 -m venv` (its ensurepip module) as a package of its own, python3.X-venv, which
# a fresh machine often lacks. When missing it is installed with apt-get (as root, or through sudo); where that
# cannot be done the script stops with one line saying what to install. Idempotent: a Python that can already
# create venvs costs one import and prints nothing.
set -euo pipefail

python="${1:-python3}"
log() { printf 'ensure-python-venv: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v "$python" >/dev/null 2>&1 || die "no Python interpreter '$python' on PATH: install python3 (3.11 or newer)"
if "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    exit 0
fi

pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
package="python${pyver}-venv"
sudo=""
if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
if ! command -v apt-get >/dev/null 2>&1 || { [[ -n "$sudo" ]] && ! command -v sudo >/dev/null 2>&1; }; then
    die "$python cannot create a venv (no ensurepip module): install $package (\`apt-get install $package\`), then re-run"
fi
log "installing $package ($python cannot create a venv without it)"
$sudo apt-get update -qq >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null \
    || die "could not install $package with apt-get: install it, then re-run"
"$python" -c 'import ensurepip, venv' >/dev/null 2>&1 \
    || die "$package is installed but $python still cannot create a venv: use the Python that package belongs to"
