"""Where ms4fleet keeps things on a host. One place, so both engines write the same paths."""

from __future__ import annotations

from ms4fleet.catalog import ModelProfile

# The first line of every text file ms4fleet manages on a host.
HEADER = "# Managed by ms4fleet: edits are overwritten on the next deploy.\n"
ETC_DIR = "/etc/ms4fleet"
# Secrets the deploying process supplies by environment variable land here, mode 0600, root only.
SECRETS_DIR = f"{ETC_DIR}/secrets"
# The service's secrets as an EnvironmentFile (VLLM_API_KEY=...), mode 0600, root only.
ENV_FILE = f"{ETC_DIR}/vllm.env"
# The rendered plan of the release running now, and the one before it (rollback).
RELEASES_DIR = "/var/lib/ms4fleet/releases"
SYSTEMD_DIR = "/etc/systemd/system"
UNIT_PREFIX = "ms4fleet-vllm"
# Where each pinned revision's weights directory lives on the host (ms4fleet_weights.dir by default).
WEIGHTS_ROOT = "/srv/ms4fleet/models"
# Who owns a finalized weights directory: root, so that the service user reads the weights and can neither
# change them nor re-stamp a change (the integrity metadata in it is root's alone, 0700/0600, whatever this says).
WEIGHTS_OWNER = "root:root"
# Where the weights directory is mounted inside the vLLM container.
CONTAINER_MODEL_DIR = "/models"


def unit_name(replica: int) -> str:
    return f"{UNIT_PREFIX}-{replica}.service"


def container_name(replica: int) -> str:
    return f"{UNIT_PREFIX}-{replica}"


def model_dir(weights_root: str, profile: ModelProfile, revision: str | None) -> str:
    """``/srv/ms4fleet/models/mistralai--Mistral-Small-4-119B-2603/<revision>``: one directory per pin,
    so a new revision is staged beside the one serving and the switch is a unit change."""
    return f"{weights_root}/{profile.repo_id.replace('/', '--')}/{revision or 'unversioned'}"
