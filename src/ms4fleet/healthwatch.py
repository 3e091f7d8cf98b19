"""The host's standing GPU health reading: a systemd timer runs the core's reader every ``INTERVAL_S`` and
keeps its answer in ``READING``, so the converged check reads a file instead of starting NVML.

Starting NVML is most of a no-op's cost on a host: importing nvidia-ml-py and ``nvmlInit`` take 0.15 s of
the reader's 0.2 s on an H200. The check takes the kept reading while it is at most ``FRESH_S`` old and runs
the reader itself otherwise (no timer yet, a stopped timer, a reader that keeps failing, a reboot: ``/run``
is empty after one), so a GPU gone bad shows in the check within ``FRESH_S``. The gates before a replica
(re)starts never take the kept reading: they read the GPUs then.

+ ``files()``: the reader, its service and its timer, as provisioning installs them.
+ ``read_command(inline)``: the check's shell for the health section (``inline`` runs the reader).
"""

from __future__ import annotations

import shlex

from ms4fleet.escape import systemd_word
from ms4fleet.hostscripts import source
from ms4fleet.paths import HEADER, SYSTEMD_DIR
from ms4fleet.weights.startcheck import HOST_PYTHON

READER = "/usr/local/lib/ms4fleet/health.py"
SERVICE = "ms4fleet-health.service"
TIMER = "ms4fleet-health.timer"
PATHS = (READER, f"{SYSTEMD_DIR}/{SERVICE}", f"{SYSTEMD_DIR}/{TIMER}")
# Under /run: gone at a reboot, when every reading before it no longer says anything about the GPUs.
RUNTIME_DIR = "ms4fleet-health"
READING = f"/run/{RUNTIME_DIR}/reading.json"
INTERVAL_S = 30
# Two intervals and the reader's longest run (nvidia-smi's 20 s timeout, the kernel log's): one missed run is
# not yet a stale reading; two are.
FRESH_S = 90
# After any of the three changed: systemd reads the units again and the timer restarts, which reads at once.
AFTER_CHANGE = (
    "/bin/sh",
    "-c",
    f"systemctl daemon-reload && {{ ! systemctl is-active --quiet {TIMER} || systemctl restart {TIMER}; }}",
)


def service_text() -> str:
    argv = [HOST_PYTHON, READER, "--output", READING]
    return (
        f"{HEADER}[Unit]\n"
        "Description=ms4fleet: read the GPUs' health for the converged check\n"
        # Started by its timer, and by hand to read now: no start limit to trip over.
        "StartLimitIntervalSec=0\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={' '.join(systemd_word(a) for a in argv)}\n"
        f"RuntimeDirectory={RUNTIME_DIR}\n"
        "RuntimeDirectoryPreserve=yes\n"
        "RuntimeDirectoryMode=0755\n"
        # nvidia-smi's and the kernel log's timeouts are 20 s each; a hung driver must not hold the timer.
        "TimeoutStartSec=60\n"
        # Root reads the kernel log and every GPU; it needs nothing else, and serving comes first.
        "Nice=10\n"
        "IOSchedulingClass=idle\n"
        # Every 30 s on every host: systemd's "Starting"/"Finished" lines would bury the journal; failures still show.
        "LogLevelMax=notice\n"
        "NoNewPrivileges=yes\n"
        "ProtectSystem=strict\n"
        "ProtectHome=yes\n"
        "PrivateTmp=yes\n"
    )


def timer_text() -> str:
    return (
        f"{HEADER}[Unit]\n"
        f"Description=ms4fleet: read the GPUs' health every {INTERVAL_S} s\n"
        "\n"
        "[Timer]\n"
        "OnActiveSec=0\n"
        f"OnUnitActiveSec={INTERVAL_S}s\n"
        "AccuracySec=1s\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


def files() -> list[tuple[str, str, int]]:
    """(path, content, mode) of the reader, its service and its timer."""
    reader, service, timer = PATHS
    reader_text = source("health.py").decode()
    return [(reader, reader_text, 0o755), (service, service_text(), 0o644), (timer, timer_text(), 0o644)]


def read_command(inline: str) -> str:
    """The kept reading while it is at most ``FRESH_S`` old (and not from the future: a clock set back),
    else ``inline``, the reader run now."""
    path = shlex.quote(READING)
    return (
        f"age=$(( $(date +%s) - $(stat -c %Y {path} 2>/dev/null || echo 0) )); "
        f'if [ -s {path} ] && [ "$age" -ge 0 ] && [ "$age" -le {FRESH_S} ]; then cat {path}; else {inline}; fi'
    )
