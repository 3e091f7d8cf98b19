"""plan == apply for the pyinfra engine, on its fake connector: every file the deploy of a bare host uploads
is one of the host plan's files, with its bytes, owner and mode, and every planned file is uploaded.
(The sim test tests/ansible/test_parity_sim.py proves the same on real hosts, for both engines.)"""

from __future__ import annotations

import re

from ms4fleet import healthwatch
from ms4fleet.config import HostConfig
from ms4fleet.hostplan import host_plan
from ms4fleet.provision import OsRelease
from tests.pyinfra.harness import SPECS, load_spec, plan

UPLOAD = re.compile(r"^upload (?P<dest>\S+)\n(?P<body>.*)\Z", re.DOTALL)


def test_every_upload_of_a_bare_host_deploy_is_a_planned_file() -> None:
    spec = load_spec(SPECS / "deploy" / "ubuntu2404-h200x8-bare.json")
    planned_ops = plan(spec["host_data"], spec["responses"])
    uploads: dict[str, tuple[str, list[str]]] = {}
    for commands in planned_ops.values():
        if not isinstance(commands, list):
            continue
        for command in commands:
            if match := UPLOAD.match(command):
                uploads[match["dest"]] = (match["body"], commands)
    config = HostConfig.from_host_data("gpu-1", spec["host_data"])
    hp = host_plan(config, OsRelease("ubuntu", "24.04"))
    wanted = {f.path: f for f in (*hp.files, *hp.merged_files)}
    assert set(uploads) == set(wanted)
    for path, (body, commands) in uploads.items():
        f = wanted[path]
        assert body == f.content, path
        assert f"chown {f.owner}:{f.group} {path}" in commands and f"chmod {f.mode:o} {path}" in commands, commands


def test_the_plan_says_what_runs_after_a_file_changes() -> None:
    """A bare host gets the nouveau blacklist, so the deploy rebuilds the initramfs the way the plan says; and
    the host proxy's config, so the deploy reloads nginx where it runs; and the GPU health timer's files, so
    systemd reads them again and the timer restarts."""
    spec = load_spec(SPECS / "deploy" / "ubuntu2404-h200x8-bare.json")
    config = HostConfig.from_host_data("gpu-1", spec["host_data"])
    after = [f for f in host_plan(config, OsRelease("ubuntu", "24.04")).files if f.after_change]
    assert [(f.kind, f.after_change) for f in after] == [
        ("nouveau", ("/usr/sbin/update-initramfs", "-u")),
        ("proxy", ("/bin/sh", "-c", "! systemctl is-active --quiet nginx || systemctl reload nginx")),
        *[("health-watch", healthwatch.AFTER_CHANGE)] * 3,
    ]
    reload = "systemctl daemon-reload && { ! systemctl is-active --quiet ms4fleet-health.timer || systemctl restart"
    assert reload in healthwatch.AFTER_CHANGE[2]
    commands = [c for cs in plan(spec["host_data"], spec["responses"]).values() if isinstance(cs, list) for c in cs]
    assert "test ! -e /usr/sbin/update-initramfs || /usr/sbin/update-initramfs -u" in commands
    assert any("systemctl reload nginx" in c for c in commands), commands
    assert sum(reload in c for c in commands) == 3, commands
    assert "systemctl enable ms4fleet-health.timer" in commands and "systemctl start ms4fleet-health.timer" in commands
