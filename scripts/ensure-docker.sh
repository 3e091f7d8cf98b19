#!/usr/bin/env bash
# Make this machine ready for the ms4fleet sim, idempotently:
#   - install what the sim and the controller run, when missing, checking each program itself (a machine may
#     ship a docker *client* and no daemon): dockerd (docker.io), debootstrap, dpkg-scanpackages (dpkg-dev),
#     gpg (gnupg), rsync and ssh (the controller's weights staging), curl, sysctl (procps), tmux (a test
#     watches staging's progress in a terminal), chromium-headless-shell (tests/report screenshots the rollout
#     report and the plan page);
#   - raise the inotify limits many systemd containers need (fs.inotify.max_user_instances/watches);
#   - start dockerd when it is not running (CI machines have no systemd: it is started in the background,
#     logging to /var/log/dockerd.log) and wait until it answers.
# With --cleanup it instead removes every container, network and volume the sim made (label
# io.ms4fleet.sim), for CI to run on exit even after a failure; images and the build cache stay.
set -euo pipefail

LABEL=io.ms4fleet.sim
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

cleanup() {
    command -v docker >/dev/null 2>&1 || return 0
    docker info >/dev/null 2>&1 || return 0
    local ids
    ids=$(docker ps -aq --filter "label=${LABEL}")
    if [ -n "$ids" ]; then docker rm -f -v $ids >/dev/null; fi
    ids=$(docker network ls -q --filter "label=${LABEL}")
    if [ -n "$ids" ]; then docker network rm $ids >/dev/null; fi
    ids=$(docker volume ls -q --filter "label=${LABEL}")
    if [ -n "$ids" ]; then docker volume rm -f $ids >/dev/null; fi
    echo "ensure-docker: removed every ${LABEL} container, network and volume"
}

if [ "${1:-}" = "--cleanup" ]; then
    cleanup
    exit 0
fi

if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
    echo "ensure-docker: error: not root and no sudo: run it as root, or install sudo (\`apt-get install sudo\`)" >&2
    exit 1
fi

# program -> the Debian package that provides it. dockerd, not docker: a docker client alone runs nothing.
# rsync and ssh are the controller's (ms4fleet.controller.PROGRAMS; tests/unit/test_controller.py keeps the two
# lists in step); sysctl raises the inotify limits below.
PROGRAMS="dockerd:docker.io debootstrap:debootstrap dpkg-scanpackages:dpkg-dev gpg:gnupg rsync:rsync ssh:openssh-client ssh-keygen:openssh-client curl:curl sysctl:procps tmux:tmux chromium-headless-shell:chromium-headless-shell"
missing=()
for pair in $PROGRAMS; do
    program=${pair%%:*} package=${pair#*:}
    if ! command -v "$program" >/dev/null 2>&1; then
        case " ${missing[*]:-} " in *" $package "*) ;; *) missing+=("$package") ;; esac
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "ensure-docker: error: missing ${missing[*]} and no apt-get here: install them with your package manager" >&2
        exit 1
    fi
    echo "ensure-docker: installing ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Every sim host runs systemd (and often dockerd), each taking inotify instances from root's shared budget;
# the kernel default (128) runs out at about 20 hosts and new hosts then fail to boot (no sshd).
raise_sysctl() {
    local key=$1 want=$2 have
    have=$(sysctl -n "$key" 2>/dev/null || echo 0)
    if [ "$have" -lt "$want" ]; then
        $SUDO sysctl -q -w "$key=$want" || echo "ensure-docker: could not raise $key to $want (have $have)" >&2
    fi
}
raise_sysctl fs.inotify.max_user_instances 8192
raise_sysctl fs.inotify.max_user_watches 524288

if ! docker info >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        $SUDO systemctl start docker
    else
        echo "ensure-docker: starting dockerd (log: /var/log/dockerd.log)"
        # The daemon outlives this script: it must not inherit the caller's other descriptors (a CI
        # runner's pipes, a held lock file) or whoever waits on them waits for dockerd.
        $SUDO setsid sh -c 'exec dockerd >>/var/log/dockerd.log 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-' </dev/null &
    fi
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "ensure-docker: dockerd did not come up in 60 s; see /var/log/dockerd.log" >&2
        exit 1
    fi
fi
echo "ensure-docker: dockerd $(docker version --format '{{.Server.Version}}') ready"
