"""How a host switches between releases, for both rollout engines: the shell that replaces its replica units,
the ports a release's replicas listen on, and which hosts the load balancer keeps out after a batch.

+ ``switch_script(units, source_dir, old, start)``: stop the old replicas, remove units the release does not
  have (a shrink, or a rollback of units only the failed release added), install the release's unit files
  from ``source_dir``, reload systemd and (``start``) start them. ``old=None``: every ms4fleet replica unit
  installed on the host, found there (Ansible has not read them); the pyinfra driver passes what it read.
+ ``stop_script(units)``: a failed release with nothing to go back to is stopped and disabled.
+ ``release_ports(release)``: unit -> the port vLLM listens on in that unit (from its replica's argv).
+ ``lb_out(phases, out_before)``: the hosts out of the load balancer once a batch ends.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Collection, Mapping, Sequence

from ms4fleet import paths
from ms4fleet.proxy import RELOAD_COMMAND
from ms4fleet.rollout.hoststate import REJOINING, Phase
from ms4fleet.rollout.release import Release

# A rollback is checked before its host rejoins: the previous release passed the full gate once, so these
# say it serves again.
ROLLBACK_CHECKS = ("health", "models", "completion")
ROLLBACK_TIMEOUT_S = 60.0
# Every replica unit ms4fleet installs (the driver lists them; the shell globs them).
UNIT_GLOB = f"{paths.UNIT_PREFIX}-*.service"


def _systemctl(units: Sequence[str], *verbs: str) -> str:
    return " && ".join(f"systemctl {verb} {' '.join(shlex.quote(u) for u in units)}" for verb in verbs)


def switch_script(
    units: Sequence[str], source_dir: str, old: Sequence[str] | None = None, start: bool = False, block: bool = False
) -> str:
    """One shell script (``set -e``) run as root while the host is out of the load balancer. ``block``: the
    start returns once every unit is ready (its ExecStartPost waits for /health), else it does not wait."""
    script = ["set -e"]
    if old is None:
        script += [
            "old=''",
            f'for f in {paths.SYSTEMD_DIR}/{UNIT_GLOB}; do [ -f "$f" ] && old="$old $(basename "$f")"; done',
            'if [ -n "$old" ]; then systemctl stop $old; fi',
        ]
        wanted = " ".join(shlex.quote(u) for u in units)
        script.append(
            f'for u in $old; do case " {wanted} " in *" $u "*) ;; *) '
            f'systemctl disable "$u" || true; rm -f {paths.SYSTEMD_DIR}/"$u";; esac; done'
        )
    else:
        if old:
            script.append(_systemctl(old, "stop"))
        for name in sorted(set(old) - set(units)):
            script.append(
                f"systemctl disable {shlex.quote(name)} || true; rm -f {paths.SYSTEMD_DIR}/{shlex.quote(name)}"
            )
    # The old replicas are stopped, so the public ports are free: a host proxy that could not bind one (a host
    # upgraded from a release whose vLLM held it) binds it now; a reload with every port bound changes nothing.
    script.append(shlex.join(RELOAD_COMMAND))
    for name in units:
        script.append(f"install -m 644 {shlex.quote(f'{source_dir}/{name}')} {paths.SYSTEMD_DIR}/{shlex.quote(name)}")
    script.append("systemctl daemon-reload")
    if start and units:
        # A replica that crash-looped into its StartLimitBurst refuses every start until reset; a rollback
        # to the previous units of the same names is exactly such a start.
        script.append(_systemctl(units, "reset-failed") + " 2>/dev/null || true")
        script.append(_systemctl(units, "enable --quiet", "start" if block else "start --no-block"))
    return "\n".join(script)


def stop_script(units: Sequence[str]) -> str:
    """Nothing ran here before the failed release: leave the host stopped rather than serving it."""
    return _systemctl(units, "disable --now --quiet")


def release_ports(release: Release) -> dict[str, int]:
    """Each unit of ``release`` -> the port vLLM listens on in it (loopback, behind the host proxy), read
    from the argv of its replica (the index in the unit's name)."""
    out = {}
    for unit in sorted(release.units):
        number = unit.removeprefix(f"{paths.UNIT_PREFIX}-").removesuffix(".service")
        index = int(number) if number.isdigit() else len(release.argv)
        argv = release.argv[index] if index < len(release.argv) else ()
        port = next((int(value) for flag, value in itertools.pairwise(argv) if flag == "--port"), None)
        if port is not None:
            out[unit] = port
    return out


def lb_out(phases: Mapping[str, Phase | str], out_before: Collection[str]) -> set[str]:
    """Hosts the load balancer keeps out after a batch: a host of this run rejoins once verified or rolled
    back (its previous release checked again); one that failed, was lost or is mid-switch stays out. A host
    not switched in this run keeps its place (out if it was out)."""
    out = {name for name in out_before if name not in phases}
    out.update(name for name, phase in phases.items() if Phase(phase) not in REJOINING)
    return out
