"""The functions behind the filters of ``plugins/filter/rollout.py`` (imported only once ``requirement`` is met).

See that module for what each filter is for; nothing is decided here but in the ms4fleet core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import (
    core,  # noqa: F401 (before the core)
    hostplan,
)

from ms4fleet import paths
from ms4fleet.hostplan import IMAGE_ARCHIVE_KEYS, STAGING_DIR_KEYS, plan_for_data
from ms4fleet.imagepin import pin_configs
from ms4fleet.rollout import hostread, lb
from ms4fleet.rollout.changes import deploy_change
from ms4fleet.rollout.release import RELEASE_FILE, STAGED_DIR, Release, ReleaseRecord, release_for
from ms4fleet.rollout.switch import (
    ROLLBACK_CHECKS,
    ROLLBACK_TIMEOUT_S,
    lb_out,
    release_ports,
    stop_script,
    switch_script,
)
from ms4fleet.rollout.waves import Policy, WaveSize, check_capacity, plan_waves
from ms4fleet.serving import local_address, plan_host, url_host

# The fact the playbook sets on each host it switches (a ``hoststate.Phase`` value): where the host stands.
PHASE_FACT = "rollout_phase"


def rollout_batches(
    hosts: Sequence[str],
    canary: int | None = None,
    wave: str | None = None,
    max_unavailable: int | None = None,
    changing: Sequence[str] | None = None,
    unavailable: Sequence[str] | None = None,
) -> list[list[str]]:
    if not hosts:
        return []  # no host in the group: the play has nothing to run (and lint checks it without an inventory)
    default = Policy()  # an option left out (None) is the core's default
    policy = Policy(
        canary=default.canary if canary is None else int(canary),
        wave=default.wave if wave is None else WaveSize.parse(str(wave)),
        max_unavailable=default.max_unavailable if max_unavailable is None else int(max_unavailable),
    )
    fleet = list(hosts)
    plan = plan_waves(fleet, set(fleet if changing is None else changing), policy, unavailable=unavailable or ())
    if changing is not None and plan.waves:
        # site.yml's serving hosts: refused (one line) when the hosts already down leave too few serving.
        check_capacity(fleet, set(unavailable or ()), plan)
    return [list(batch) for w in plan.waves for batch in w.batches]


def rollout_serial(
    hosts: Sequence[str],
    canary: int | None = None,
    wave: str | None = None,
    max_unavailable: int | None = None,
    changing: Sequence[str] | None = None,
    unavailable: Sequence[str] | None = None,
) -> list[int]:
    return [len(batch) for batch in rollout_batches(hosts, canary, wave, max_unavailable, changing, unavailable)]


def rollout_pins(gpu_hostvars: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    configs = []
    for variables in gpu_hostvars:
        config = hostplan.host_config(variables)
        data = {key: str(variables[key]) for key in IMAGE_ARCHIVE_KEYS if variables.get(key)}
        configs.append((config, plan_for_data(config, data).image.id))
    return {
        name: config.runtime.model_dump(mode="json")
        for name, config in pin_configs(configs).items()
        if config.runtime.kind == "docker"
    }


def rollout_release(variables: Mapping[str, Any]) -> dict[str, Any]:
    config = hostplan.host_config(variables)
    # The whole plan is recorded with the release (as the pyinfra rollout does): the next rollout classifies
    # its change against it.
    data = {key: str(variables[key]) for key in (*IMAGE_ARCHIVE_KEYS, *STAGING_DIR_KEYS) if variables.get(key)}
    return release_for(config, plan_host(config), None, plan_for_data(config, data)).to_dict()


def rollout_paths(release: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "release_file": RELEASE_FILE,
        "staged_dir": f"{STAGED_DIR}/{release['id']}",
        "units_dir": paths.SYSTEMD_DIR,
        "lb_conf": lb.CONF_PATH,
        "previous_dir": f"{STAGED_DIR}/previous",
        "drain_window_s": lb.DRAIN_WINDOW_S,
        "rollback_checks": list(ROLLBACK_CHECKS),
        "rollback_timeout_s": ROLLBACK_TIMEOUT_S,
        "read_script": hostread.READ_SCRIPT,
    }


def rollout_switch(units: Sequence[str], source_dir: str) -> str:
    return switch_script(list(units), source_dir, None, start=True, block=True)


def rollout_stop(units: Sequence[str]) -> str:
    return stop_script(list(units))


def rollout_replicas(variables: Mapping[str, Any], release: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not isinstance(release, Mapping):
        return []  # no release recorded: nothing runs
    host = url_host(local_address(hostplan.host_config(variables)))
    ports = release_ports(Release.from_dict(release))
    return [{"unit": unit, "port": port, "url": f"http://{host}:{port}"} for unit, port in ports.items()]


def rollout_routed_out(conf_texts: Sequence[str]) -> list[str]:
    out: set[str] = set()
    for text in conf_texts:
        out |= lb.routed(text or "").down
    return sorted(out)


def rollout_lb_out(gpu_hostvars: Sequence[Mapping[str, Any]], out_before: Sequence[str] = ()) -> list[str]:
    phases = {str(v["inventory_hostname"]): str(v[PHASE_FACT]) for v in gpu_hostvars if v.get(PHASE_FACT) is not None}
    return sorted(lb_out(phases, set(out_before)))


def rollout_current(record_text: str | None, host: str) -> dict[str, Any] | None:
    record = ReleaseRecord.parse(host, record_text or "")
    return None if record.current is None else record.current.to_dict()


def rollout_deploy_change(
    read_text: str | None, variables: Mapping[str, Any], converged: bool = False
) -> dict[str, Any]:
    host = str(variables.get("inventory_hostname", "?"))
    read = hostread.parse(read_text or "")
    current = ReleaseRecord.parse(host, read.record_text).current
    found = deploy_change(current, Release.from_dict(rollout_release(variables)), read.sha256, bool(converged))
    return {**found.to_dict(), "disruptive": found.change.disruptive}


def rollout_record(record_text: str | None, release: Mapping[str, Any], host: str) -> str:
    record = ReleaseRecord.parse(host, record_text or "")
    return record.advance(Release.from_dict(release)).to_json()


def _lb_settings(lb_vars: Mapping[str, Any] | None) -> lb.LbSettings:
    if lb_vars is None:
        return lb.LbSettings()
    data = {key: hostplan._plain(lb_vars[key]) for key in lb.TLS_KEYS if key in lb_vars}
    return lb.settings_from_data(str(lb_vars.get("inventory_hostname", "?")), data)


def rollout_nginx_conf(
    gpu_hostvars: Sequence[Mapping[str, Any]], down: Sequence[str] = (), lb_vars: Mapping[str, Any] | None = None
) -> str:
    backends = []
    for variables in gpu_hostvars:
        name = str(variables["inventory_hostname"])
        plan = plan_host(hostplan.host_config(variables, name))
        address = lb.backend_address(name, variables, variables.get("ansible_host"))
        backends.extend(lb.Backend(name, address, replica.port) for replica in plan.replicas)
    return lb.nginx_conf(backends, set(down), _lb_settings(lb_vars))


def rollout_lb_key_check(lb_vars: Mapping[str, Any]) -> str:
    return lb.key_check_script(_lb_settings(lb_vars))


def rollout_in_flight(metrics_text: str) -> float:
    return lb.in_flight(metrics_text)
