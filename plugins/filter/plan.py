"""Filters that render the ms4fleet core's decisions for the roles (controller side, no decision here).

+ ``hostvars[inventory_hostname] | ms4fleet.fleet.provision_plan(ansible_facts)``: packages by group, holds,
  managed files (bytes, mode, owner), services to enable, reboot policy.
+ ``hostvars[inventory_hostname] | ms4fleet.fleet.serving_plan``: replicas, unit names and unit bytes.
+ ``hostvars[inventory_hostname] | ms4fleet.fleet.service_secrets``: secret uploads and the env-file script.
+ ``current_text | ms4fleet.fleet.daemon_json(hostvars[inventory_hostname])``: daemon.json merged.
+ ``driver_changed | ms4fleet.fleet.needs_reboot(reboot_required, loaded, installed)``.
+ ``path | ms4fleet.fleet.image_archive_id``: the image id inside a ``docker save`` archive.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Mapping
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import hostplan

from ms4fleet import provision as core_provision


def provision_plan(variables: Mapping[str, Any], facts: Mapping[str, Any]) -> dict[str, Any]:
    return hostplan.provision(variables, facts)


def serving_plan(variables: Mapping[str, Any]) -> dict[str, Any]:
    return hostplan.serving(variables)


def service_secrets(variables: Mapping[str, Any]) -> dict[str, Any]:
    return hostplan.secrets(variables)


def daemon_json(current: str | None, variables: Mapping[str, Any]) -> str:
    return core_provision.daemon_json(current or None, hostplan.host_config(variables))


def needs_reboot(driver_changed: bool, reboot_required: bool, loaded: str | None, installed: str | None) -> bool:
    return core_provision.needs_reboot(bool(driver_changed), bool(reboot_required), loaded or None, installed or None)


def image_archive_id(path: str) -> str:
    """``sha256:…`` of the image in a ``docker save`` archive (its config blob's digest), read from manifest.json."""
    try:
        with tarfile.open(path) as archive:
            member = archive.extractfile("manifest.json")
            if member is None:
                raise ValueError("manifest.json is not a file")
            manifest = json.load(member)
    except (OSError, KeyError, tarfile.TarError, ValueError) as err:
        raise ValueError(f"image archive {path}: not a `docker save` archive ({err})") from None
    if len(manifest) != 1:
        raise ValueError(f"image archive {path}: holds {len(manifest)} images, expected exactly one")
    config = str(manifest[0]["Config"]).rsplit("/", 1)[-1].removesuffix(".json")
    return config if config.startswith("sha256:") else f"sha256:{config}"


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            fn.__name__: hostplan.guard(fn)
            for fn in (provision_plan, serving_plan, service_secrets, daemon_json, needs_reboot, image_archive_id)
        }
