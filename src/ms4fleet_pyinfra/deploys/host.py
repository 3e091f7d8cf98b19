"""The ms4fleet deploy of one host: the core's ``HostPlan`` (for the OS the host runs, replicas only on the GPUs
its health check does not exclude) -> operations.

Order: base packages, NVIDIA apt source and keyring, pin and nouveau blacklist, driver / fabric manager /
CUDA / Docker / container toolkit (held where the core says), reboot only when the core's ``needs_reboot``
says so, daemon.json merged (dockerd reloaded or restarted as the core says), services, service user, vLLM
image, weights, unit files, secrets, GPU health gate, headroom gate, replicas (restarted only when their unit,
image, weights or secrets changed), endpoint verification gate.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

from pyinfra.api.deploy import deploy
from pyinfra.context import host
from pyinfra.operations import apt, files, systemd

from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.converged import check_data
from ms4fleet.hostplan import HostPlan, PlannedFile, plan_for_data
from ms4fleet.provision import APT_LOCK_TIMEOUT_S, OsRelease
from ms4fleet.serving import ServingPlan
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.stage import target_for
from ms4fleet_pyinfra import earlyread
from ms4fleet_pyinfra.facts import OsReleaseFact, Probe
from ms4fleet_pyinfra.hostconfig import host_data
from ms4fleet_pyinfra.operations import docker, services, serving, weights
from ms4fleet_pyinfra.operations import host as hostops
from ms4fleet_pyinfra.operations.changes import any_changed
from pyinfra import logger

APT_ARGS = f"-o DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}"


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


def replan(hp: HostPlan, os: OsRelease) -> HostPlan:
    """The host's plan for the OS it runs (the same plan when that is the one it was made for)."""
    return hp if os == hp.os else plan_for_data(hp.config, host_data(host), os, hp.serving.excluded, hp.provision.stack)


@deploy("ms4fleet")
def deploy_host(config: HostConfig, sudo: bool) -> None:
    data = host_data(host)
    try:
        # The core's converged check (quick where a stored verdict still holds, else full), GPU health read
        # in the same round trip, through a fact so that it also runs under --dry (its first read went out
        # before the deploy loaded: ms4fleet_pyinfra.earlyread).
        found = check_data(host.name, config, data, lambda script: earlyread.read(host, script, sudo))
        if found.health_warning:
            logger.warning(f"{host.print_prefix}{found.health_warning}")
        elif found.health_error:
            logger.info(f"{host.print_prefix}GPU health not read yet ({found.health_error}): planning every GPU")
        for e in found.excluded:
            logger.warning(f"{host.print_prefix}GPU {e.gpu} excluded: {e.reason}")
        # found.stack: what the host already has (the full check's probe) decides the driver and Docker.
        hp = plan_for_data(config, data, found.os or host.get_fact(OsReleaseFact), found.excluded, found.stack)
        for missing in hp.serving.missing:
            logger.warning(f"{host.print_prefix}{missing.explanation}")
        if found.converged:
            count = len(hp.replicas)
            hostops.converged(
                summary=f"converged: {count} replica(s) active, nothing the last full check read has changed"
                if found.quick
                else f"converged: {count} verified replica(s), packages held, files as planned",
                name="converged (nothing to do)",
            )
            return
        for note in hp.notes:
            logger.info(f"{host.print_prefix}{note}")
    except (ConfigError, WeightsError) as err:
        # Also at prepare time, so that --dry states a refusal.
        logger.error(f"{host.print_prefix}{err}")
        hostops.fail_host(message=str(err), name="ms4fleet: host check")
        return
    differences = found.differences
    logger.info(
        f"{host.print_prefix}to converge: {'; '.join(differences[:6])}" + (" ..." if len(differences) > 6 else "")
    )
    report_headroom(config, hp.serving, sudo)
    provision(hp, sudo)
    image = hp.image
    image_op = (
        docker.image(ref=image.ref, archive=image.archive, image_id=image.id, name="vLLM image")
        if image.ref is not None and image.obtain != "none"
        else None
    )
    weights_plan = hp.require_weights()
    weights_op = weights.weights(
        request=weights_plan.request,
        target=target_for(host.name, connection(host_data(host)), host_data(host)),
        staging_root=weights_plan.staging_dir,
        name="weights (fetch once, push, verify on host)",
    )
    serve(hp, [op for op in (image_op, weights_op) if op is not None], sudo)


def provision(hp: HostPlan, sudo: bool) -> None:
    base = hp.group("base")
    assert base is not None
    apt.packages(packages=list(base.names), update=True, cache_time=3600, name="base packages")
    key = hostops.apt_key(
        url=hp.apt.key_url,
        keyring=hp.apt.keyring,
        fingerprint=hp.apt.key_fingerprint,
        sudo=sudo,
        name="NVIDIA apt keyring (pinned key only)",
    )
    planned = [f for f in hp.files if f.kind != "unit"]
    managed = [put(f) for f in planned]
    for f, op in zip(planned, managed, strict=True):
        if f.after_change:
            hostops.after_change(argv=f.after_change, _if=any_changed([op]), name=f"after {f.path} changed")
    apt.update(name="apt update (NVIDIA source changed)", _if=any_changed([key, *managed]))
    hostops.release_holds(
        held_groups={g.group: tuple(g.names) for g in hp.packages if g.hold},
        name="release holds the new packages replace",
    )
    # A held driver (and its fabric manager) at another version than the pin: installed at the pin first.
    moved = hostops.move_to_pins(
        group_pins={g.group: g.pins for g in hp.packages},
        name="move held driver packages to their pinned version",
    )
    installs = {}
    stack = hp.provision.stack
    # host.loop: pyinfra's CLI names an operation by its call stack's lines, so the install and hold calls of
    # this loop need its position too, or hosts with other groups (one holds a driver, another has none) pair
    # them differently and pyinfra finds a cycle in the fleet's operation order (pyinfra leaves loop untyped).
    for group in host.loop(hp.packages):  # type: ignore[no-untyped-call]
        if group is base:
            continue
        if group.group == "driver" and stack is not None and stack.before_driver_install():
            hostops.after_change(argv=stack.before_driver_install(), name="driver takeover: uninstall the runfile's")
        label = " ".join(group.names)
        installs[group.group] = apt.packages(
            packages=list(group.names), extra_install_args=APT_ARGS, name=f"install {label}"
        )
        if group.hold:
            hostops.holds(packages=group.names, name=f"hold {label}")
    driver_op = installs.get("driver")
    hostops.reboot_if_needed(
        # The move counts where ms4fleet manages the driver (as in the nvidia_driver role): a fabric manager
        # moved next to a driver left alone asks for no reboot.
        driver_changed=any_changed([moved, driver_op] if driver_op else []),
        policy=hp.reboot,
        name="reboot if the driver needs it",
    )
    if hp.group("fabric_manager") is not None:
        hostops.fabric_manager_matches_driver(name="fabric manager matches the driver")
    if hp.merged_files:
        docker.daemon_config(config=hp.config, name="docker daemon.json (merged)")
        services.service(unit="docker", name="docker running")
    dropins: dict[str, list[Any]] = {}
    for f, op in zip((f for f in hp.files if f.kind != "unit"), managed, strict=True):
        if f.kind == "unit-dropin":
            dropins.setdefault(hp.dropin_unit(f), []).append(op)
    systemd.daemon_reload(
        name="systemd daemon-reload (drop-ins changed)", _if=any_changed([op for ops in dropins.values() for op in ops])
    )
    for unit in hp.units:
        if unit.role == "provision" and unit.name != "docker":
            changed = dropins.get(unit.name)
            services.service(
                unit=unit.name,
                restart=any_changed(changed) if changed else None,
                name=f"{unit.name} running" + (" (restarted if its drop-in changed)" if changed else ""),
            )
    user = hp.service_user
    hostops.service_user(user=user.name, shell=user.shell, name=f"service user {user.name}")


def put(f: PlannedFile, name: str | None = None) -> Any:
    """One managed file, exactly the plan's bytes, mode and owner."""
    return files.put(
        src=StringIO(f.content), dest=f.path, mode=f"{f.mode:o}", user=f.owner, group=f.group, name=name or f.path
    )


def serve(hp: HostPlan, inputs: list[Any], sudo: bool) -> None:
    config, plan = hp.config, hp.serving
    serving.stale_units(wanted=tuple(r.unit_name for r in hp.replicas), name="stale vLLM units")
    units = {r.unit_name: put(hp.file(r.unit_path), name=r.unit_name) for r in hp.replicas}
    systemd.daemon_reload(name="systemd daemon-reload (units changed)", _if=any_changed(units.values()))
    secrets = (
        [
            serving.uploaded_secrets(config=config, name="secret files from the deploying environment"),
            serving.env_file(config=config, name=f"{hp.secrets.env_file} (0600)"),
        ]
        if hp.secrets.refs
        else []
    )
    restarting = any_changed([*units.values(), *inputs, *secrets])
    serving.health_gate(config=config, plan=plan, restarting=restarting, sudo=sudo, name="GPU health gate")
    serving.headroom_gate(config=config, plan=plan, restarting=restarting, sudo=sudo, name="headroom gate")
    started = [
        services.service(
            unit=r.unit_name,
            restart=any_changed([units[r.unit_name], *inputs, *secrets]),
            name=f"run {r.unit_name}",
        )
        for r in hp.replicas
    ]
    # The proxy binds each replica's public port; a replica of an older plan (vLLM on that port itself) held it
    # until its restart just now, so the reload at the proxy's file change could not take it: this one can.
    for proxy in (f for f in hp.files if f.kind == "proxy" and f.after_change):
        hostops.after_change(argv=proxy.after_change, _if=any_changed(started), name="reload the host proxy")
    serving.verify_gate(
        config=config,
        plan=plan,
        checks=frozenset(hp.gates.verify_checks),
        timeout_s=hp.gates.verify_timeout_s,
        restarted=any_changed(started),
        sudo=sudo,
        name="endpoint verification gate",
    )
