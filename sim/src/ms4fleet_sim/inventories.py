"""Inventories of an up fleet for both engines: pyinfra (``.py``) and Ansible (YAML).

Both carry the same data, everything the documented commands need and nothing from the environment: how to
reach each host (127.0.0.1:<port>, the fleet key, a strict known_hosts file) and the ms4fleet host config
keys the core's loader reads (``ms4fleet_gpu`` per host; for the group ``ms4fleet_provision`` pointing at
the sim's apt repository with the fleet's registry as Docker Hub mirror, ``ms4fleet_runtime`` naming the
production image the registry holds, ``ms4fleet_serving`` saying the endpoint is open, ``ms4fleet_weights``
pointing at the fleet's weights mirror), plus
where the controller stages weights. They import nothing: plain data a user can read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ms4fleet_sim import aptrepo, services, signing
from ms4fleet_sim.fleet import DEFAULT_FLEET, Fleet, FleetRecord
from ms4fleet_sim.standin_image import STANDIN_IMAGE, STANDIN_VLLM_VERSION
from ms4fleet_sim.weights_mirror import SIM_REVISION, manifest_sha256

GROUP = "sim"
__all__ = ["STANDIN_IMAGE", "STANDIN_VLLM_VERSION", "group_data", "paths", "remove", "write"]


def group_data(record: FleetRecord) -> dict[str, Any]:
    """ms4fleet settings every sim host shares."""
    return {
        "ms4fleet_provision": {
            "nvidia_apt_repo": {
                "url": aptrepo.NVIDIA_URL,
                "suite": "/",
                "components": [],
                "key_url": aptrepo.KEY_URL,
                # The sim archive key's own fingerprint: pinned as a production inventory pins NVIDIA's.
                "key_fingerprint": signing.fingerprint(),
            },
            # Docker Hub pulls go to the fleet's registry: `docker pull vllm/vllm-openai:...` as in production.
            "docker_daemon_options": {"registry-mirrors": [services.REGISTRY_MIRROR_URL]},
        },
        "ms4fleet_runtime": {
            "kind": "docker",
            "image": STANDIN_IMAGE,
            "vllm_version": STANDIN_VLLM_VERSION,
            # `ms4fleet rollout` pins the tag to a digest at the registry the hosts pull from (through their
            # mirror): the controller reaches it on loopback, over plain http.
            **(
                {"registry_url": f"http://{record.registry}", "registry_allow_insecure": True}
                if record.registry
                else {}
            ),
        },
        # Open, and said so: the sim's clients (tests, load generators, the LB) call replicas without a key.
        # A fleet that says nothing gets ms4fleet's generated key (tests/sim/test_sim_generated_key.py).
        "ms4fleet_serving": {"open_endpoint": True},
        "ms4fleet_weights": {
            "source": "mirror",
            "mirror_url": record.mirror_url,
            # The sim's mirror is plain http on the fleet's own network; its manifest is pinned all the same,
            # as a production inventory pins its mirror's.
            "allow_insecure": True,
            "revision": SIM_REVISION,
            "manifest_sha256": manifest_sha256(),
        },
    }


def host_data(record: FleetRecord) -> dict[str, dict[str, Any]]:
    return {
        host.name: {
            "ssh_port": host.ssh_port,
            "ms4fleet_gpu": {"kind": host.gpu_kind, "count": host.gpu_count},
        }
        for host in record.hosts
    }


def paths(fleet: Fleet) -> tuple[Path, Path]:
    """Where the inventories go: ``inventory/sim.{py,yml}`` for the default fleet, else under ``.sim/<fleet>/``."""
    if fleet.name == DEFAULT_FLEET:
        base = fleet.root / "inventory"
        return base / "sim.py", base / "sim.yml"
    return fleet.state_dir / "inventory.py", fleet.state_dir / "inventory.yml"


def py_literal(value: Any, indent: int = 0) -> str:
    """A Python literal for JSON-like data, one key per line (readable and diff-friendly)."""
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, dict) and value:
        items = [f"{inner}{key!r}: {py_literal(item, indent + 4)}," for key, item in value.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple) and value:
        items = [f"{inner}{py_literal(item, indent + 4)}," for item in value]
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
        return opening + "\n" + "\n".join(items) + f"\n{pad}{closing}"
    return repr(value)


def render_pyinfra(record: FleetRecord) -> str:
    hosts = [
        (
            name,
            {"ssh_hostname": "127.0.0.1", "ssh_port": data["ssh_port"], "ms4fleet_gpu": data["ms4fleet_gpu"]},
        )
        for name, data in host_data(record).items()
    ]
    shared = {
        "ssh_user": record.user,
        "ssh_key": record.key_file,
        "ssh_known_hosts_file": record.known_hosts,
        "ssh_strict_host_key_checking": "yes",
        "ssh_connect_retries": 3,
        "weights_staging_dir": record.staging_dir,
        **group_data(record),
    }
    return (
        f'"""pyinfra inventory of the ms4fleet sim fleet {record.fleet!r}.\n\n'
        'Written by `ms4fleet sim up`; do not edit.\n"""\n\n'
        f"{GROUP} = {py_literal((hosts, shared))}\n"
    )


def render_ansible(record: FleetRecord) -> str:
    hosts = {
        name: {"ansible_host": "127.0.0.1", "ansible_port": data["ssh_port"], "ms4fleet_gpu": data["ms4fleet_gpu"]}
        for name, data in host_data(record).items()
    }
    shared = {
        "ansible_user": record.user,
        "ansible_ssh_private_key_file": record.key_file,
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={record.known_hosts} -o StrictHostKeyChecking=yes",
        "ansible_python_interpreter": "/usr/bin/python3",
        "model_weights_staging_dir": record.staging_dir,
        **group_data(record),
    }
    doc = {"all": {"children": {GROUP: {"hosts": hosts, "vars": shared}}}}
    header = (
        f"# Ansible inventory of the ms4fleet sim fleet {record.fleet!r}: written by `ms4fleet sim up`, do not edit.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def write(fleet: Fleet, record: FleetRecord) -> tuple[Path, Path]:
    py_path, yml_path = paths(fleet)
    py_path.parent.mkdir(parents=True, exist_ok=True)
    py_path.write_text(render_pyinfra(record), encoding="utf-8")
    yml_path.write_text(render_ansible(record), encoding="utf-8")
    return py_path, yml_path


def remove(fleet: Fleet) -> None:
    for path in paths(fleet):
        path.unlink(missing_ok=True)
