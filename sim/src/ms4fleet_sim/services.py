"""The sim fleet's own services on the controller side: a weights mirror and a Docker registry.

A real fleet fetches weights from an internal mirror and pulls the vLLM image from a registry. The sim
fleet brings both, as containers of the fleet (started by ``sim up``, listed by ``sim status``, removed by
``sim down``), so the documented commands need nothing running beside them:

+ ``ms4fleet-sim-<fleet>-mirror``: the synthetic checkpoint of ``weights_mirror`` served read-only over HTTP,
  published on ``127.0.0.1:<port>`` for the controller, which fetches the weights once and stages them to hosts.
+ ``ms4fleet-sim-<fleet>-registry``: Debian's ``docker-registry`` (distribution 2.8) holding the vLLM
  stand-in as ``vllm/vllm-openai:v0.32.0``. Hosts reach it on the fleet network as a Docker Hub mirror
  (``registry-mirrors`` in daemon.json, written by the toolkit from the inventory's ``docker_daemon_options``),
  so they run the production ``docker pull vllm/vllm-openai:v0.32.0`` unchanged. The controller pushes the
  image through ``127.0.0.1:<port>`` (Docker trusts loopback registries over plain HTTP).

+ ``ensure(fleet, host_image)``: both containers up and filled; returns their endpoints.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ms4fleet_sim import dockercli, standin_image, weights_mirror
from ms4fleet_sim.cache import build_lock, cache_root, image_namespace, recipe_hash

REGISTRY_ALIAS = "ms4fleet-sim-registry"
REGISTRY_PORT = 5000
# What hosts put in daemon.json's registry-mirrors: the registry by its alias on the fleet network.
REGISTRY_MIRROR_URL = f"http://{REGISTRY_ALIAS}:{REGISTRY_PORT}"
REGISTRY_PACKAGE = "docker-registry"
REGISTRY_CONFIG = "/etc/ms4fleet-sim/registry.yml"
# Debian's own config asks for htpasswd logins; the sim's registry is reached only from the fleet network
# and the controller's loopback, and holds nothing secret.
REGISTRY_CONFIG_TEXT = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
http:
  addr: :5000
"""
MIRROR_PORT = 80
CONFIG_LABEL = "io.ms4fleet.sim.config"
SERVICE_PORT_LABEL = "io.ms4fleet.sim.service_port"


@dataclass(frozen=True)
class Endpoints:
    """Where the controller reaches the fleet's services (loopback ports published by Docker)."""

    mirror_url: str
    registry: str


def registry_image_tag(host_image: str) -> str:
    digest = recipe_hash("registry", host_image, REGISTRY_PACKAGE, REGISTRY_CONFIG, REGISTRY_CONFIG_TEXT)
    return f"{image_namespace()}/registry:{digest}"


def ensure_registry_image(host_image: str, log: Callable[[str], None]) -> str:
    """The host image plus Debian's docker-registry package (built once per recipe with apt, then committed)."""
    tag = registry_image_tag(host_image)
    if dockercli.image_exists(tag):
        return tag
    with build_lock("registry-image"):
        if dockercli.image_exists(tag):
            return tag
        log(f"building {tag} (Debian's {REGISTRY_PACKAGE})")
        builder = f"ms4fleet-sim-build-registry-{tag.rsplit(':', 1)[1]}"
        dockercli.run(["rm", "-f", builder], check=False)
        script = (
            "set -e; apt-get update -qq; "
            f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {REGISTRY_PACKAGE}; "
            "apt-get clean; rm -rf /var/lib/apt/lists/*; "
            f"mkdir -p {REGISTRY_CONFIG.rsplit('/', 1)[0]}; printf '%s' \"$REGISTRY_CONFIG_TEXT\" > {REGISTRY_CONFIG}"
        )
        try:
            dockercli.run(
                [
                    "run",
                    "--name",
                    builder,
                    "--label",
                    f"{dockercli.LABEL}=build",
                    "-e",
                    f"REGISTRY_CONFIG_TEXT={REGISTRY_CONFIG_TEXT}",
                    host_image,
                    "sh",
                    "-c",
                    script,
                ],
                timeout=900,
            )
            dockercli.run(
                [
                    "commit",
                    "--change", f'CMD ["/usr/bin/docker-registry", "serve", "{REGISTRY_CONFIG}"]',
                    "--change", f"LABEL {dockercli.LABEL}=registry-image",
                    builder, tag,
                ]
            )  # fmt: skip
        finally:
            dockercli.run(["rm", "-f", builder], check=False)
    return tag


def _published_port(container: str, port: int) -> int:
    mapping = dockercli.out(["port", container, f"{port}/tcp"]).splitlines()[0]
    return int(mapping.rsplit(":", 1)[1])


def _ensure_container(
    name: str, config: str, run_args: list[str], container_port: int, take_port: Callable[[], int]
) -> int:
    """Start ``name`` unless a running container of the same config exists; return its loopback port."""
    info = dockercli.inspect("container", name)
    if info is not None and info["Config"]["Labels"].get(CONFIG_LABEL) == config:
        if not info["State"]["Running"]:
            dockercli.run(["start", name])
        return _published_port(name, container_port)
    if info is not None:
        dockercli.run(["rm", "-f", name])
    port = take_port()
    dockercli.run(
        [
            "run", "-d", "--name", name, "--restart", "unless-stopped",
            "--label", f"{CONFIG_LABEL}={config}", "--label", f"{SERVICE_PORT_LABEL}={port}",
            "-p", f"127.0.0.1:{port}:{container_port}",
            *run_args,
        ]
    )  # fmt: skip
    return port


def _wait_http(url: str, what: str, attempts: int = 100) -> None:
    probe = ["curl", "-fsS", "-o", "/dev/null", "--max-time", "2", url]
    for _ in range(attempts):
        if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            return
        subprocess.run(["sleep", "0.2"], check=False)
    raise TimeoutError(f"{what} did not answer at {url}")


def ensure_mirror(
    labels: list[str], network: str, name: str, host_image: str, tree: Path, take_port: Callable[[], int]
) -> str:
    """The weights mirror container serving ``tree`` (built here, deterministic bytes); returns its URL."""
    weights_mirror.build_tree(tree)
    # NET_ADMIN: a bench throttles the mirror's egress with tc (ms4fleet_sim.links), as a real mirror's link is.
    config = recipe_hash("mirror", host_image, str(tree), weights_mirror.SIM_REVISION, "NET_ADMIN")
    port = _ensure_container(
        name,
        config,
        [
            *labels, "--network", network, "--cap-add", "NET_ADMIN", "-v", f"{tree}:/srv/mirror:ro",
            host_image, "python3", "-m", "http.server", str(MIRROR_PORT), "--directory", "/srv/mirror",
        ],
        MIRROR_PORT,
        take_port,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/", f"the weights mirror {name}")
    return url


def ensure_registry(
    labels: list[str],
    network: str,
    name: str,
    host_image: str,
    take_port: Callable[[], int],
    log: Callable[[str], None],
) -> str:
    """The registry container holding the stand-in under its production name; returns ``127.0.0.1:PORT``."""
    image = ensure_registry_image(host_image, log)
    port = _ensure_container(
        name,
        recipe_hash("registry", image),
        [*labels, "--network", network, "--network-alias", REGISTRY_ALIAS, image],
        REGISTRY_PORT,
        take_port,
    )
    registry = f"127.0.0.1:{port}"
    _wait_http(f"http://{registry}/v2/", f"the registry {name}")
    push_standin(registry, dockercli.out(["inspect", "--format", "{{.Id}}", name]), log)
    return registry


def push_standin(registry: str, container_id: str, log: Callable[[str], None]) -> None:
    """Push the stand-in (tagged as the production image) to ``registry`` (container ``container_id``) unless
    it already holds that image."""
    source = standin_image.ensure_image()
    target = f"{registry}/{source}"
    image_id = dockercli.out(["image", "inspect", "--format", "{{.Id}}", source])
    stamp = cache_root() / "registry-pushes" / recipe_hash(registry, target, image_id)
    # The stamp records the registry container: a recreated registry starts empty.
    if stamp.exists() and stamp.read_text() == container_id:
        return
    log(f"pushing {source} to the sim registry {registry}")
    dockercli.run(["tag", source, target])
    try:
        dockercli.run(["push", target], timeout=600)
    finally:
        dockercli.run(["rmi", target], check=False)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(container_id)
