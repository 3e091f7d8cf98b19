"""What every ms4fleet action shares: the core imported behind the version check, the options validated
against the spec its module documents, and the host's configuration as the roles read it."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.ms4fleet.fleet.plugins.plugin_utils import (
    core,  # noqa: F401 (before the core)
    hostplan,
)

from ms4fleet.config import HostConfig

# An action's argument spec, as ``validate_argument_spec`` takes it.
Spec = dict[str, dict[str, Any]]


class CoreAction(ActionBase):
    """An action whose work is the core's: subclasses set ``ARGUMENT_SPEC`` and implement ``act``."""

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _requires_connection = True
    ARGUMENT_SPEC: ClassVar[Spec] = {}

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)
        return self.act(result, args, task_vars or {})

    @abstractmethod
    def act(self, result: dict[str, Any], args: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        """The action's work: ``result`` from ActionBase.run, ``args`` validated against ``ARGUMENT_SPEC``."""

    def host_config(self, variables: dict[str, Any]) -> HostConfig:
        """The host's configuration; a value the core refuses fails the task with the core's first line."""
        try:
            return hostplan.task_host_config(self._templar, variables)
        except ValueError as err:  # ConfigError is a ValueError
            raise AnsibleActionFail(str(err)) from None
