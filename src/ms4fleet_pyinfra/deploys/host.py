"""The ms4fleet deploy of one host: facts -> the core's plans (provision, serving, weights) -> operations.

Order: base packages, NVIDIA apt source and keyring, pin and nouveau blacklist, driver / fabric manager /
CUDA / Docker / container toolkit (held where the core says), reboot only when the core's ``needs_reboot``
says so, daemon.json merged (docker restarted only on change), services, service user, vLLM image, weights,
unit files, secrets, headroom gate, replicas (restarted only when their unit, image, weights or secrets
changed), endpoint verification gate.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

from pyinfra.api.deploy import deploy
from pyinfra.context import host
from pyinfra.operations import apt, files, systemd

from ms4fleet import paths
from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.converged import check
from ms4fleet.provision import KEYRING, ProvisionPlan, provision_plan
from ms4fleet.secrets import service_secret_refs
from ms4fleet.serving import ServingPlan, plan_host
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.request import request_for_host
from ms4fleet.weights.stage import DEFAULT_STAGING, target_for
from ms4fleet_pyinfra.facts import OsReleaseFact, Probe, Sections
from ms4fleet_pyinfra.hostconfig import host_data
from ms4fleet_pyinfra.operations import docker, services, serving, weights
from ms4fleet_pyinfra.operations import host as hostops
from ms4fleet_pyinfra.operations.changes import any_changed
from pyinfra import logger

# apt waits for a lock held by unattended-upgrades on fresh Ubuntu instead of failing the host.
APT_ARGS = "-o DPkg::Lock::Timeout=600"


def connection(data: dict[str, Any]) -> dict[str, Any]:
    keys = {"ssh_hostname": "hostname", "ssh_port": "port", "ssh_user": "user", "ssh_key": "key"}
    return {neutral: data[key] for key, neutral in keys.items() if data.get(key) is not None}


def report_headroom(config: HostConfig, plan: ServingPlan, sudo: bool) -> None:
    """At prepare time (also under --dry): probe the host and print the core's headroom verdict."""
    probe = host.get_fact(Probe, _sudo=sudo)
    if probe.report is None:
        logger.warning(f"{host.print_prefix}headroom: probe failed: {probe.error}")
        return
    report = probe.report
    verdicts = serving.headroom_verdicts(config, plan, report)
    driver = report.driver.version or "none"
    summary = "; ".join(f"replica {index} {verdict}" for index, verdict, _ in verdicts)
    logger.info(
        f"{host.print_prefix}probe ({report.source}): {len(report.gpus)} GPU(s), driver {driver}; "
        f"plan {len(plan.replicas)} replica(s) of TP={plan.tp}; headroom: {summary}"
    )
    for index, verdict, reasons in verdicts:
        if verdict == "does-not-fit":
            logger.warning(f"{host.print_prefix}headroom replica {index}: {' '.join(reasons)}")


@deploy("ms4fleet")
def deploy_host(config: HostConfig, sudo: bool) -> None:
    try:
        request = request_for_host(config)
        serving_plan = plan_host(config)
        # The core's converged check (quick where a stored verdict still holds, else full), read through a
        # fact so that it also runs under --dry.
        found = check(host.name, config, serving_plan, request, lambda script: host.get_fact(Sections, script=script))
        if found.converged:
            count = len(serving_plan.replicas)
            hostops.converged(
                summary=f"converged: {count} replica(s) active, nothing the last full check read has changed"
                if found.quick
                else f"converged: {count} verified replica(s), packages held, files as planned",
                name="converged (nothing to do)",
            )
            return
        os_release = found.os or host.get_fact(OsReleaseFact)
        plan = provision_plan(config, os_release)
    except (ConfigError, WeightsError) as err:
        hostops.fail_host(message=str(err), name="ms4fleet: host check")
        return
    differences = found.differences
    logger.info(
        f"{host.print_prefix}to converge: {'; '.join(differences[:6])}" + (" ..." if len(differences) > 6 else "")
    )
    report_headroom(config, serving_plan, sudo)
    provision(config, plan)
    data = host_data(host)
    image_op = (
        docker.image(ref=serving_plan.image, archive=data.get("vllm_image_archive"), name="vLLM image")
        if serving_plan.image is not None
        else None
    )
    weights_op = weights.weights(
        request=request,
        target=target_for(host.name, connection(data), data),
        staging_root=str(data.get("weights_staging_dir") or DEFAULT_STAGING),
        name="weights (fetch once, push, verify on host)",
    )
    serve(config, serving_plan, [op for op in (image_op, weights_op) if op is not None], sudo)


def provision(config: HostConfig, plan: ProvisionPlan) -> None:
    repo = plan.nvidia_repo
    apt.packages(packages=list(plan.base.names), update=True, cache_time=3600, name="base packages")
    key = files.download(src=repo.key_url, dest=KEYRING, mode="644", name="NVIDIA apt keyring")
    managed = [
        files.put(src=StringIO(f.content), dest=f.path, mode=f"{f.mode:o}", user=f.owner, group=f.group, name=f.path)
        for f in plan.files
    ]
    apt.update(name="apt update (NVIDIA source changed)", _if=any_changed([key, *managed]))
    installs = {}
    for group in plan.packages()[1:]:
        label = " ".join(group.names)
        installs[group.names] = apt.packages(
            packages=list(group.names), extra_install_args=APT_ARGS, name=f"install {label}"
        )
        if group.hold:
            hostops.holds(packages=group.names, name=f"hold {label}")
    driver_op = installs.get(plan.driver.names) if plan.driver else None
    hostops.reboot_if_needed(
        driver_changed=any_changed([driver_op] if driver_op else []),
        policy=config.provision.reboot,
        name="reboot if the driver needs it",
    )
    if plan.fabric_manager is not None:
        hostops.fabric_manager_matches_driver(name="fabric manager matches the driver")
    if plan.docker is not None:
        daemon = docker.daemon_config(config=config, name="docker daemon.json (merged)")
        services.service(
            unit="docker", restart=any_changed([daemon]), name="docker running (restarted if daemon.json changed)"
        )
    for name in plan.enabled_services:
        if name != "docker":
            services.service(unit=name, name=f"{name} running")
    hostops.service_user(user=plan.service_user, name=f"service user {plan.service_user}")


def serve(config: HostConfig, plan: ServingPlan, inputs: list[Any], sudo: bool) -> None:
    serving.stale_units(wanted=tuple(r.unit_name for r in plan.replicas), name="stale vLLM units")
    units = {
        r.unit_name: files.put(
            src=StringIO(r.unit_text), dest=f"{paths.SYSTEMD_DIR}/{r.unit_name}", mode="644", name=r.unit_name
        )
        for r in plan.replicas
    }
    systemd.daemon_reload(name="systemd daemon-reload (units changed)", _if=any_changed(units.values()))
    secrets = (
        [
            serving.uploaded_secrets(config=config, name="secret files from the deploying environment"),
            serving.env_file(config=config, name=f"{paths.ENV_FILE} (0600)"),
        ]
        if service_secret_refs(config)
        else []
    )
    restarting = any_changed([*units.values(), *inputs, *secrets])
    serving.headroom_gate(config=config, plan=plan, restarting=restarting, sudo=sudo, name="headroom gate")
    started = [
        services.service(
            unit=r.unit_name,
            restart=any_changed([units[r.unit_name], *inputs, *secrets]),
            name=f"run {r.unit_name}",
        )
        for r in plan.replicas
    ]
    serving.verify_gate(
        config=config, plan=plan, restarted=any_changed(started), sudo=sudo, name="endpoint verification gate"
    )
