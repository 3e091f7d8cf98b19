"""Engine parity on the simulated fleet: from the same config, one host converged by pyinfra (``deploy.py``)
and one by Ansible (``playbooks/site.yml``) end with identical managed files (path, owner, group, mode,
sha256), identical versions of the packages the core plans, and identical service states."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ms4fleet import paths
from ms4fleet.config import HostConfig
from ms4fleet.provision import DAEMON_JSON, KEYRING, OsRelease, provision_plan
from ms4fleet.serving import plan_host
from ms4fleet_sim.weights_mirror import SIM_REVISION
from tests.ansible import simrun
from tests.pyinfra import simfleet

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "parity"
PYINFRA_HOST, ANSIBLE_HOST = f"{FLEET}-1", f"{FLEET}-2"
# ansible.builtin.apt installs python3-apt on first use; on Debian 12 it brings these along.
APT_MODULE_NEEDS = {"python3-apt", "python-apt-common", "distro-info-data", "iso-codes", "lsb-release"}


def host_config(fleet: simfleet.Fleet, name: str, mirror_url: str) -> HostConfig:
    inventory = yaml.safe_load(fleet.inventory.with_suffix(".yml").read_text())["all"]["children"]["sim"]
    data = {**inventory["vars"], **inventory["hosts"][name]}
    data["ms4fleet_weights"] = {"source": "mirror", "mirror_url": mirror_url, "revision": SIM_REVISION}
    return HostConfig.from_host_data(name, {k: v for k, v in data.items() if k.startswith("ms4fleet_")})


def state(fleet: simfleet.Fleet, name: str, config: HostConfig) -> dict[str, Any]:
    """What parity compares, read on the host through Docker (not through either engine)."""
    os_release = OsRelease.parse(fleet.sh(name, "cat /etc/os-release"))
    plan = provision_plan(config, os_release)
    units = [f"{paths.SYSTEMD_DIR}/{r.unit_name}" for r in plan_host(config).replicas]
    # The environment file exists only for a service with secrets; listing it checks that both agree.
    files = sorted({f.path for f in plan.files} | {DAEMON_JSON, KEYRING, paths.ENV_FILE, *units})
    script = " ; ".join(
        f"p={shlex.quote(p)}; if [ -e $p ]; then echo $p $(stat -c '%U %G %a' $p) $(sha256sum < $p | cut -c1-64);"
        " else echo $p missing; fi"
        for p in files
    )
    listed = {line.split()[0]: tuple(line.split()[1:]) for line in fleet.sh(name, script).splitlines()}
    packages = [name for group in plan.packages() for name in group.names]
    versions = fleet.sh(name, "dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n' " + " ".join(packages))
    services = [*plan.enabled_services, *(Path(u).name for u in units)]
    active = fleet.sh(name, f"systemctl is-active {' '.join(services)}", check=False).split()
    enabled = fleet.sh(name, f"systemctl is-enabled {' '.join(services)}", check=False).split()
    return {
        "files": listed,
        "packages": sorted(versions.splitlines()),
        "services": dict(zip(services, zip(active, enabled, strict=True), strict=True)),
        "all_packages": set(fleet.sh(name, "dpkg-query -W -f='${Package} ${Version}\\n'").splitlines()),
    }


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[simfleet.Fleet, str]]:
    fleet = simfleet.ensure_fleet(FLEET, 2)
    archive = simfleet.ensure_image_archive()
    try:
        with simfleet.mirror() as url:
            extra = tmp_path_factory.mktemp("ansible") / "extra-vars.yml"
            extra.write_text(
                yaml.safe_dump(
                    {
                        "ms4fleet_weights": {"source": "mirror", "mirror_url": url, "revision": SIM_REVISION},
                        "vllm_service_image_archive": str(archive),
                        "model_weights_staging_dir": str(tmp_path_factory.mktemp("ansible-staging")),
                    }
                )
            )
            staging = tmp_path_factory.mktemp("pyinfra-staging")
            # Both engines at once, each on its own host.
            ansible = _start_ansible(fleet.inventory.with_suffix(".yml"), extra)
            pyinfra = simfleet.pyinfra(
                fleet, f"--limit={PYINFRA_HOST}", mirror_url=url, archive=archive, staging=staging
            )
            ansible_out, _ = ansible.communicate()
            assert pyinfra.rc == 0, pyinfra.output[-3000:]
            assert ansible.returncode == 0, ansible_out[-3000:]
            yield fleet, url
    finally:
        fleet.down()


def _start_ansible(inventory: Path, extra: Path) -> subprocess.Popen[str]:
    argv = [
        str(simrun.BIN / "ansible-playbook"), "-i", str(inventory), "--limit", ANSIBLE_HOST, "-e", f"@{extra}",
        str(simrun.ROOT / "playbooks" / "site.yml"),
    ]  # fmt: skip
    return subprocess.Popen(argv, cwd=simrun.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_both_engines_leave_the_same_host(converged: tuple[simfleet.Fleet, str]) -> None:
    fleet, url = converged
    by_pyinfra = state(fleet, PYINFRA_HOST, host_config(fleet, PYINFRA_HOST, url))
    by_ansible = state(fleet, ANSIBLE_HOST, host_config(fleet, ANSIBLE_HOST, url))
    assert by_ansible["files"] == by_pyinfra["files"]
    assert by_ansible["packages"] == by_pyinfra["packages"]
    assert by_ansible["services"] == by_pyinfra["services"]
    assert all(s == ("active", "enabled") for s in by_ansible["services"].values()), by_ansible["services"]
    # Beyond the plan, only what Ansible's apt module itself needs on the host: python3-apt and its dependencies.
    extra = {"ansible": by_ansible["all_packages"] - by_pyinfra["all_packages"]}
    extra["pyinfra"] = by_pyinfra["all_packages"] - by_ansible["all_packages"]
    print(json.dumps({k: sorted(v) for k, v in extra.items()}, indent=1))
    assert {line.split()[0] for line in extra["ansible"]} <= APT_MODULE_NEEDS, extra
    assert not extra["pyinfra"], extra
