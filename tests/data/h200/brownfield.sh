#!/bin/sh
# Brownfield capture on the real H200 host (Ubuntu 24.04, driver 580.159.04 from the VM image, no systemd,
# Docker or network), run by the device tool from a copy of the worktree with the wheels of .whl/: the raw
# evidence of who owns the driver, the host probe as the engines run it (the machine's python3), then
# `pyinfra @local deploy.py --dry` WITHOUT manage_driver (the configured branch 580: adopted) and with
# driver_branch 570 (refused). Outputs land in $OUT; tests/probe/test_h200_brownfield.py replays them.
# .whl/ holds ms4fleet's wheel (`pip wheel --no-deps -w .whl .`: the controller check wants it installed) and
# every runtime dependency for the device's Python 3.12 (`pip download -d .whl --only-binary=:all:
# --python-version 3.12 --platform manylinux2014_x86_64 --platform any -c constraints.txt` over the
# pyproject's dependencies); the device tool carries it (`carry: [".whl"]`).
set -u
{
    date -u +%FT%TZ
    grep -E '^(PRETTY_NAME|VERSION_ID)=' /etc/os-release
    echo "uname -r: $(uname -r)"; echo "pid 1: $(ps -o comm= -p 1)"; python3 --version
    echo "--- cat /proc/driver/nvidia/version"; cat /proc/driver/nvidia/version 2>&1
    echo "--- command -v dpkg-query modinfo dkms mokutil docker systemctl"
    for c in dpkg-query modinfo dkms mokutil docker systemctl; do echo "$c: $(command -v $c || echo missing)"; done
    echo "--- runfile markers"; ls -la /usr/bin/nvidia-uninstall /var/log/nvidia-installer.log 2>&1
    echo "--- dpkg-query nvidia/docker/kernel packages"
    dpkg-query -W -f '${db:Status-Abbrev} ${Package} ${Version}\n' 'nvidia-*' 'libnvidia-*' 'linux-modules-nvidia-*' 'docker*' 'containerd*' 'linux-image-*' 'dkms' 2>&1
    echo "--- dpkg-query -S nvidia-smi"; dpkg-query -S "$(command -v nvidia-smi || echo /usr/local/nvidia/bin/nvidia-smi)" 2>&1
    echo "--- ls /boot /lib/modules"; ls /boot /lib/modules 2>&1
    echo "--- ls /sys/firmware/efi"; ls /sys/firmware/efi 2>&1 | head -5
    echo "--- findmnt /usr/local/nvidia"; grep nvidia /proc/self/mountinfo 2>&1 | head -5
} > "$OUT/meta.txt" 2>&1
python3 src/ms4fleet/hostside/probe.py --indent 1 > "$OUT/probe.json" 2> "$OUT/probe.err"
echo "probe exit $?" >> "$OUT/meta.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 MS4FLEET_CACHE_DIR=/tmp/verdicts
# The controller check wants rsync and ssh (weights staging); this image has neither and no network, and a
# dry run runs neither: stand-ins that answer the version question alone.
mkdir -p /tmp/stub
printf '#!/bin/sh\necho "rsync  version 3.2.7  protocol version 31"\n' > /tmp/stub/rsync
printf '#!/bin/sh\necho "OpenSSH_9.6p1 Ubuntu-3ubuntu13" >&2\n' > /tmp/stub/ssh
chmod +x /tmp/stub/rsync /tmp/stub/ssh
export PATH="$PATH:/tmp/stub"
dry() {  # "$@": extra --data
    python3 -c 'import sys; from pyinfra_cli.main import main; sys.argv[0] = "pyinfra"; sys.exit(main())' \
        @local deploy.py --dry \
        --data 'ms4fleet_gpu={"kind": "h200-sxm", "count": 1}' \
        --data 'ms4fleet_weights={"source": "path", "path": "/srv/ms4fleet/share", "revision": "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"}' "$@"
}
dry > "$OUT/pyinfra-dry-default.txt" 2>&1; echo "dry default exit $?" >> "$OUT/meta.txt"
dry --data 'ms4fleet_provision={"driver_branch": 570, "driver_version": "570.195.03"}' > "$OUT/pyinfra-dry-570.txt" 2>&1
echo "dry 570 exit $?" >> "$OUT/meta.txt"
