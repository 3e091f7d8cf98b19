"""How the controller checks a host's SSH key, decided once for both engines, weights staging and tunnels.

Strict by default: a host is reached only when its key is already in known_hosts (the user's, or the file the
inventory names: pyinfra's ``ssh_known_hosts_file``, ``-o UserKnownHostsFile=...`` in Ansible's
``ansible_ssh_common_args``). Trust on first use (OpenSSH's ``accept-new``: an unknown key is recorded, a
changed one is still refused) only for a host whose inventory sets ``ms4fleet_ssh_accept_new: true``. An
inventory's own host-key setting may say the same, never something weaker, and never ``accept-new`` without
the flag.

+ ``ACCEPT_NEW_KEY``: the inventory flag; ``checking(flag)``: ``"yes"`` or ``"accept-new"``.
+ ``policy(name, data)``: a host's checking from its merged inventory data, or ``ConfigError`` (one line)
  for a setting that weakens it.
Every ssh the controller runs (weights staging and rsync, the Ansible engine's verification tunnels) passes
``-o StrictHostKeyChecking=`` this first (``ms4fleet.weights.stage.HostTarget``): ssh keeps the first value it
is given for an option, so nothing later on its command line relaxes it. pyinfra's connections get it from
``ms4fleet_pyinfra.hostkeys``; the Ansible engine's own from ``ansible.cfg`` and the preflight's check.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from ms4fleet.config import KEY_PREFIX, ConfigError

ACCEPT_NEW_KEY = f"{KEY_PREFIX}ssh_accept_new"
STRICT = "yes"
ACCEPT_NEW = "accept-new"
# Where each engine's inventory may set host-key checking itself (pyinfra's key; Ansible's ssh arguments).
_PYINFRA_KEY = "ssh_strict_host_key_checking"
_ANSIBLE_ARGS = ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")
_OPTION = "stricthostkeychecking"


def checking(flag: Any) -> str:
    """``StrictHostKeyChecking`` for a host whose ``ms4fleet_ssh_accept_new`` is ``flag`` (only ``True`` relaxes)."""
    return ACCEPT_NEW if flag is True else STRICT


def policy(name: str, data: Mapping[str, Any]) -> str:
    flag = data.get(ACCEPT_NEW_KEY, False)
    if not isinstance(flag, bool):
        raise ConfigError(name, ACCEPT_NEW_KEY, f"={flag!r} is not a boolean: write true or false")
    wanted = checking(flag)
    for key, value in _inventory_settings(data):
        if value.lower() == wanted or value.lower() == STRICT:
            continue
        if value.lower() == ACCEPT_NEW:
            fix = f"remove it (strict checking is the default) or set {ACCEPT_NEW_KEY}: true to trust on first use"
        else:
            fix = "checking host keys is required: remove it (strict is the default)"
        raise ConfigError(name, key, f"sets StrictHostKeyChecking={value}: {fix}")
    return wanted


def _inventory_settings(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    found = []
    if data.get(_PYINFRA_KEY) is not None:
        found.append((_PYINFRA_KEY, str(data[_PYINFRA_KEY])))
    for key in _ANSIBLE_ARGS:
        if not data.get(key):
            continue
        try:
            words = shlex.split(str(data[key]))
        except ValueError:
            continue  # Ansible refuses it itself, with its own message
        for word in words:  # `-o Name=value`, `-oName=value`, `-o "Name value"`
            name, _, value = word.removeprefix("-o").replace("=", " ", 1).partition(" ")
            if name.strip().lower() == _OPTION:
                found.append((key, value.strip()))
    return found
