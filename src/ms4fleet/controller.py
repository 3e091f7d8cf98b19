"""What the controller (the machine that runs a deploy) must have, decided once for both engines and the CLI.

The programs the toolkit runs there (each with the Debian/Ubuntu package that provides it, a minimum version
where one matters, and what needs it), and the Python it runs on: the interpreter and every package ms4fleet
declares. Both engines check this before any host is touched; ``ms4fleet doctor`` prints it.

+ ``PROGRAMS``: every program run on the controller; ``Use``: what a run does that needs one.
+ ``deploy_uses(engine, weights=..., remote=...)``: what a deploy by that engine runs on the controller.
+ ``controller_checks(uses, engines, python=True, path=None)`` -> ``list[Check]``, every check's result.
+ ``require_controller(uses, engines, python=True, path=None)``: raises ``ControllerError`` (one line) for the
  first failing check.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from importlib import metadata
from typing import Any, Literal

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ms4fleet import __version__
from ms4fleet.childenv import child_env

Engine = Literal["pyinfra", "ansible"]
ENGINES: tuple[Engine, ...] = ("pyinfra", "ansible")
DISTRIBUTION = "ms4fleet"
# The distribution each engine runs on; every other declared dependency is the core's.
ENGINE_DISTRIBUTIONS: dict[Engine, str] = {"pyinfra": "pyinfra", "ansible": "ansible-core"}
ENGINE_NAMES: dict[Engine, str] = {"pyinfra": "the pyinfra engine", "ansible": "the Ansible engine"}
# `rsync --version` and `ssh -V` answer at once; a program that hangs here would hang the deploy too.
VERSION_TIMEOUT_S = 10.0


class Use(StrEnum):
    """What a run does on the controller that needs a program (the text completes "needed for ...")."""

    WEIGHTS = "weights staging"
    WEIGHTS_SSH = "weights staging over SSH"
    ANSIBLE_SSH = "the Ansible engine's SSH connections"


@dataclass(frozen=True)
class Program:
    name: str
    package: str  # the Debian/Ubuntu package that provides it
    uses: tuple[Use, ...]
    version_args: tuple[str, ...]
    version_pattern: str  # one group: the version in what ``name *version_args`` prints
    minimum: str | None = None
    minimum_why: str = ""  # what the minimum is for

    def version_in(self, output: str) -> str | None:
        """The version ``output`` (the program's answer to ``version_args``) reports, if any."""
        found = re.search(self.version_pattern, output)
        return found.group(1) if found else None


PROGRAMS = (
    # Fleet staging (ms4fleet.weights.stage): --append-verify resumes a file and then checks it whole.
    Program(
        "rsync",
        "rsync",
        (Use.WEIGHTS,),
        ("--version",),
        r"version\s+v?(\d+(?:\.\d+)+)",
        minimum="3.0.0",
        minimum_why="--append-verify",
    ),
    # Staging's transport and the verifier it pipes to hosts; Ansible's ssh connection and `ssh -L` tunnels.
    # Every option used (BatchMode, ExitOnForwardFailure, ControlPersist) is far older than any supported OS.
    Program("ssh", "openssh-client", (Use.WEIGHTS_SSH, Use.ANSIBLE_SSH), ("-V",), r"OpenSSH_(\d+(?:\.\d+)+)"),
)


def deploy_uses(engine: Engine | None, *, weights: bool, remote: bool) -> frozenset[Use]:
    """What a run by ``engine`` (None: the core CLI alone) runs on the controller: ``weights`` when it stages
    weights from there, ``remote`` when any of its hosts is reached over SSH (not the controller itself)."""
    uses = set()
    if weights:
        uses.add(Use.WEIGHTS)
        if remote:
            uses.add(Use.WEIGHTS_SSH)
    # pyinfra connects with paramiko (no ssh program); Ansible's ssh connection and its tunnels run ssh.
    if engine == "ansible" and remote:
        uses.add(Use.ANSIBLE_SSH)
    return frozenset(uses)


@dataclass(frozen=True)
class Check:
    """One requirement and what this controller has."""

    name: str
    kind: Literal["program", "python"]
    needed_for: str  # completes "needed for ..."
    wants: str  # a minimum version, a version range, or "any version"
    found: str  # version and where, or "" when absent
    ok: bool
    problem: str = ""  # for a failing check: what is wrong, after the name
    fix: str = ""  # the command that fixes it

    def line(self) -> str:
        """One line: what is wrong, what needs it, and what to run."""
        return f"controller: {self.name} {self.problem} (needed for {self.needed_for}): {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ControllerError(Exception):
    """A controller requirement that is not met; ``str(err)`` is one line (engines prefix ``ms4fleet: ``)."""

    def __init__(self, check: Check) -> None:
        self.check = check
        super().__init__(check.line())


def _apt(package: str) -> str:
    return f"install it with `apt-get install {package}`"


def check_program(program: Program, uses: Iterable[Use], path: str | None = None) -> Check:
    """Whether ``program`` is on ``path`` (default: PATH) and new enough; ``uses`` say what needs it."""
    needed_for = " and ".join(use.value for use in program.uses if use in set(uses))
    wants = f">= {program.minimum}" if program.minimum else "any version"
    where = shutil.which(program.name, path=path)
    if where is None:
        return Check(program.name, "program", needed_for, wants, "", False, "not found on PATH", _apt(program.package))
    try:
        done = subprocess.run(
            [where, *program.version_args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=VERSION_TIMEOUT_S,
            check=False,
            env=child_env(),
        )
        version = program.version_in(done.stdout + done.stderr)
    except (OSError, subprocess.TimeoutExpired):
        version = None
    found = f"{version or 'unknown version'} ({where})"
    if program.minimum is None:
        return Check(program.name, "program", needed_for, wants, found, True)
    if version is None:
        problem = f"at {where} did not report its version to `{program.name} {' '.join(program.version_args)}`"
        return Check(program.name, "program", needed_for, wants, found, False, problem, _apt(program.package))
    if _version_tuple(version) < _version_tuple(program.minimum):
        problem = f"{version} at {where} is older than {program.minimum} ({program.minimum_why})"
        fix = f"upgrade it with `apt-get install {program.package}` (or put a newer one first on PATH)"
        return Check(program.name, "program", needed_for, wants, found, False, problem, fix)
    return Check(program.name, "program", needed_for, wants, found, True)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def check_distribution(requirement: str, installed: str | None, needed_for: str) -> Check:
    """Whether an installed Python distribution (``installed`` version, None when absent) meets
    ``requirement`` (a PEP 508 string such as ``pyinfra>=3.10,<4``)."""
    req = Requirement(requirement)
    wants = str(req.specifier) or "any version"
    fix = f"install it with `pip install '{req.name}{req.specifier}'`"
    if installed is None:
        problem = f"is not installed for {sys.executable}"
        return Check(req.name, "python", needed_for, wants, "", False, problem, fix)
    try:
        fits = req.specifier.contains(Version(installed), prereleases=True)
    except InvalidVersion:
        fits = False
    if not fits:
        return Check(req.name, "python", needed_for, wants, installed, False, f"{installed} is not {wants}", fix)
    return Check(req.name, "python", needed_for, wants, installed, True)


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def python_checks(
    engines: Iterable[Engine] = ENGINES, installed: Callable[[str], str | None] = _installed
) -> list[Check]:
    """The interpreter, ms4fleet's own distribution, then every dependency it declares that the core or one
    of ``engines`` runs on, each against the range ms4fleet declares (its installed metadata)."""
    version = installed(DISTRIBUTION)
    if version != __version__:
        problem = (
            "is not installed as a distribution (its metadata lists what it needs)"
            if version is None
            else f"metadata says {version}, but the code imported is {__version__}"
        )
        fix = "install it with `pip install .` in its source tree (or `pip install ms4fleet`)"
        return [Check(DISTRIBUTION, "python", "every command", __version__, version or "", False, problem, fix)]
    checks = []
    dist = metadata.metadata(DISTRIBUTION)
    requires_python = SpecifierSet((dist.get_all("Requires-Python") or [""])[0])
    here = platform.python_version()
    interpreter_ok = requires_python.contains(here, prereleases=True)
    checks.append(
        Check(
            "python",
            "python",
            DISTRIBUTION,
            str(requires_python) or "any version",
            f"{here} ({sys.executable})",
            interpreter_ok,
            "" if interpreter_ok else f"{here} is not {requires_python}",
            "" if interpreter_ok else f"run ms4fleet with a Python {requires_python}",
        )
    )
    checks.append(Check(DISTRIBUTION, "python", "every command", __version__, version, True))
    by_engine = {canonicalize_name(dist): engine for engine, dist in ENGINE_DISTRIBUTIONS.items()}
    wanted = set(engines)
    for text in metadata.requires(DISTRIBUTION) or []:
        req = Requirement(text)
        # Extras (dev tools) are not what the controller runs on.
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        engine = by_engine.get(canonicalize_name(req.name))
        if engine is not None and engine not in wanted:
            continue
        needed_for = ENGINE_NAMES[engine] if engine is not None else DISTRIBUTION
        checks.append(check_distribution(f"{req.name}{req.specifier}", installed(req.name), needed_for))
    return checks


def controller_checks(
    uses: Iterable[Use] = tuple(Use),
    engines: Iterable[Engine] = ENGINES,
    *,
    python: bool = True,
    path: str | None = None,
) -> list[Check]:
    """Every check a run doing ``uses`` with ``engines`` needs (default: everything the toolkit can run)."""
    wanted = set(uses)
    checks = [check_program(p, wanted, path) for p in PROGRAMS if wanted.intersection(p.uses)]
    return checks + (python_checks(engines) if python else [])


def require_controller(
    uses: Iterable[Use],
    engines: Iterable[Engine] = (),
    *,
    python: bool = True,
    path: str | None = None,
) -> list[Check]:
    """``controller_checks``, raising ``ControllerError`` for the first that fails."""
    checks = controller_checks(uses, engines, python=python, path=path)
    failed = next((check for check in checks if not check.ok), None)
    if failed is not None:
        raise ControllerError(failed)
    return checks
