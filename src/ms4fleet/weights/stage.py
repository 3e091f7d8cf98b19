"""Fleet staging: fetch once, fan the verified files out over SSH with rsync, let each host verify itself.

For each host, in parallel:

1. ``weights_verify.py prepare DIR`` (the stdlib script piped to the host's python3 over SSH): nothing to do
   when DIR already verifies; otherwise ``DIR.partial`` is readied, keeping DIR's good files when it holds
   the same revision (only bad files travel again).
2. ``rsync`` over the same SSH connection data into ``DIR.partial``: no compression (weights do not
   compress), ``--append-verify`` so an interrupted file resumes where it stopped and is then checked.
3. ``weights_verify.py finalize DIR``: the host hashes what arrived, seals it (owner, read-only) and renames
   it into place.

rsync over ssh is used rather than SFTP: it is the fastest robust option (kernel-side I/O, resumable,
checksummed) and every provisioned host has it.

+ ``HostTarget``: how to reach a host (``local()`` for the controller itself); ``target_for(name, connection,
  data)`` builds one from an inventory host's SSH settings (pyinfra or Ansible keys); ``is_local(name, data)``.
+ ``stage_to_hosts(staged_dir, jobs, parallel, progress=None, bwlimit=None)`` -> ``list[HostOutcome]``; with a
  ``progress`` (``ms4fleet.progress.Tracker``) each host is a row fed by rsync's ``--info=progress2``.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from ms4fleet import hostkeys
from ms4fleet.childenv import child_env
from ms4fleet.controller import ControllerError, Use, require_controller
from ms4fleet.hostside import weights_verify as hv
from ms4fleet.weights.manifest import read_manifest

# Where the controller keeps the one verified copy it fans out (one directory per repo and revision).
DEFAULT_STAGING = Path("/var/cache/ms4fleet/weights")
# rsync --bwlimit's own syntax (a rate, KiB/s without a unit): staging may share links that serve traffic.
BWLIMIT = re.compile(r"\A[1-9][0-9]*(\.[0-9]+)?[KMG]?\Z")
# One --info=progress2 update: bytes moved so far this run, percent of what this run moves.
_PROGRESS2 = re.compile(rb"^\s*([0-9][0-9,]*)\s+([0-9]{1,3})%")
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15")
RSYNC_OPTIONS = (
    "--recursive",
    "--times",
    "--partial",
    "--append-verify",
    "--chmod=Du+w,Fu+w",
    "--exclude=/.ms4fleet/stamp.json",
    "--exclude=/.ms4fleet/partial/",
    "--exclude=/.cache/",
    "--stats",
)


@dataclass(frozen=True)
class HostTarget:
    """One host as SSH sees it; ``hostname=None`` means this machine (no SSH)."""

    name: str
    hostname: str | None = None
    port: int = 22
    user: str | None = None
    key: str | None = None
    ssh_options: tuple[str, ...] = ()
    python: str = "python3"
    # StrictHostKeyChecking, from ms4fleet.hostkeys: strict unless the inventory allows trust on first use.
    host_key_checking: str = hostkeys.STRICT

    @classmethod
    def local(cls, name: str = "localhost") -> HostTarget:
        return cls(name=name)

    @property
    def needs_sudo(self) -> bool:
        return self.hostname is not None and self.user not in (None, "root")

    def ssh_argv(self) -> list[str]:
        # First on the command line: ssh keeps the first value of an option, so no later option relaxes it.
        argv = ["ssh", "-o", f"StrictHostKeyChecking={self.host_key_checking}", *SSH_OPTIONS, "-p", str(self.port)]
        if self.key:
            argv += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        argv += list(self.ssh_options)
        if self.user:
            argv += ["-l", self.user]
        return argv

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on the host (through ssh and sudo when needed)."""
        if self.hostname is None:
            return list(argv)
        remote = (["sudo", "-n"] if self.needs_sudo else []) + list(argv)
        return [*self.ssh_argv(), self.hostname, "--", shlex.join(remote)]

    def rsync_argv(self, source: Path, dest: str) -> list[str]:
        argv = ["rsync", *RSYNC_OPTIONS]
        if self.hostname is None:
            return [*argv, f"{source}/", f"{dest}/"]
        argv += ["-e", shlex.join(self.ssh_argv())]
        if self.needs_sudo:
            argv += ["--rsync-path=sudo -n rsync"]
        return [*argv, f"{source}/", f"{self.hostname}:{shlex.quote(dest)}/"]


@dataclass(frozen=True)
class StageJob:
    host: HostTarget
    dest: str
    owner: str | None = None


@dataclass
class HostOutcome:
    host: str
    status: Literal["present", "staged", "failed"]
    detail: str = ""
    bytes_sent: int = 0
    hashed_on_host: int = 0
    steps: list[str] = field(default_factory=list)


def is_local(name: str, data: Mapping[str, Any]) -> bool:
    """Whether an inventory host (pyinfra or Ansible keys) is the controller itself, reached without SSH."""
    return name == "@local" or data.get("ssh_connector") == "local" or data.get("ansible_connection") == "local"


def target_for(name: str, connection: Mapping[str, Any], data: Mapping[str, Any]) -> HostTarget:
    """SSH connection data from an inventory host (pyinfra or Ansible keys)."""
    if is_local(name, data):
        return HostTarget.local(name)
    options: list[str] = []
    if data.get("ssh_known_hosts_file"):
        options += ["-o", f"UserKnownHostsFile={data['ssh_known_hosts_file']}"]
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if data.get(key):
            options += shlex.split(str(data[key]))
    return HostTarget(
        name=name,
        hostname=str(connection.get("hostname", name)),
        port=int(connection.get("port", 22)),
        user=str(connection["user"]) if connection.get("user") else None,
        key=str(connection["key"]) if connection.get("key") else None,
        ssh_options=tuple(options),
        host_key_checking=hostkeys.policy(name, data),
    )


def verifier_source() -> bytes:
    """The stdlib verifier script, as shipped to hosts over SSH stdin."""
    return resources.files("ms4fleet.hostside").joinpath("weights_verify.py").read_bytes()


def _run_verifier(job: StageJob, args: Sequence[str], timeout: float) -> hv.Report:
    argv = job.host.command([job.host.python, "-", *args, "--json"])
    done = subprocess.run(
        argv, input=verifier_source(), capture_output=True, timeout=timeout, check=False, env=child_env()
    )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        report: hv.Report = json.loads(lines[-1])
    except (IndexError, ValueError):
        stderr = done.stderr.decode(errors="replace").strip().splitlines()
        last = stderr[-1] if stderr else "no output"
        raise RuntimeError(f"{args[0]} failed (exit {done.returncode}): {last}") from None
    return report


class HostProgress(Protocol):
    """Per-host byte counts (``ms4fleet.progress.Tracker`` is one)."""

    def row(self, key: str, total: int, done: int = 0) -> None: ...

    def moved(self, key: str, done: int, total: int | None = None) -> None: ...

    def done(self, key: str) -> None: ...


def _pump(stream: IO[bytes], sink: list[bytes], on_update: Callable[[bytes], None] | None = None) -> None:
    """Read ``stream`` to its end into ``sink``; each ``\r``- or ``\n``-ended piece also goes to ``on_update``."""
    pending = b""
    for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        sink.append(chunk)
        if on_update is None:
            continue
        pieces = re.split(rb"[\r\n]", pending + chunk)
        pending = pieces.pop()
        for piece in pieces:
            on_update(piece)


def run_rsync(argv: Sequence[str], timeout: float, on_bytes: Callable[[int, int], None] | None) -> tuple[int, str, str]:
    """rsync with its output read as it comes: ``on_bytes(moved, percent)`` for every progress2 update. The
    exit status and whole stdout/stderr at the end; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""

    def update(piece: bytes) -> None:
        match = _PROGRESS2.match(piece)
        if match and on_bytes is not None:
            on_bytes(int(match.group(1).replace(b",", b"")), int(match.group(2)))

    out: list[bytes] = []
    err: list[bytes] = []
    with subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env()) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        errors = threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True)
        errors.start()
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        killer = threading.Timer(timeout, kill)
        killer.start()
        try:
            _pump(proc.stdout, out, update)
            code = proc.wait()
        finally:
            killer.cancel()
        errors.join()
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(list(argv), timeout)
    return code, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")


def _bytes_sent(stats: str) -> int:
    for line in stats.splitlines():
        # File data actually sent (an appended file counts only its missing tail).
        if line.startswith("Literal data:"):
            return int(line.split(":", 1)[1].split()[0].replace(",", ""))
    return 0


def _stage_one(
    staged: Path,
    repo: str,
    revision: str,
    job: StageJob,
    timeout: float,
    progress: HostProgress | None = None,
    bwlimit: str | None = None,
) -> HostOutcome:
    outcome = HostOutcome(job.host.name, "failed")
    name = job.host.name
    try:
        return _stage_steps(staged, repo, revision, job, timeout, progress, bwlimit, outcome)
    finally:
        if progress is not None:
            progress.done(name)


def _stage_steps(
    staged: Path,
    repo: str,
    revision: str,
    job: StageJob,
    timeout: float,
    progress: HostProgress | None,
    bwlimit: str | None,
    outcome: HostOutcome,
) -> HostOutcome:
    expect = ["--repo", repo, "--revision", revision]
    try:
        prepared = _run_verifier(job, ["prepare", job.dest, *expect], timeout)
        if prepared["error"] and not prepared["action"]:
            outcome.detail = f"prepare: {prepared['error']}"
            return outcome
        outcome.steps.append(f"prepare: {prepared['action']}")
        if prepared["action"] == "none":
            outcome.status, outcome.detail = "present", "already verified"
            return outcome
        argv = job.host.rsync_argv(staged, hv.staging_dir(job.dest))
        argv[1:1] = [f"--bwlimit={bwlimit}"] if bwlimit else []
        on_bytes = None
        if progress is not None:
            # Until rsync says how much of the revision this host lacks, the whole revision is its row's total.
            row = progress
            row.row(job.host.name, read_manifest(staged).total_bytes)
            argv[1:1] = ["--info=progress2"]

            def on_bytes(moved: int, percent: int) -> None:
                row.moved(job.host.name, moved, moved * 100 // percent if percent else None)

        code, stdout, stderr = run_rsync(argv, timeout, on_bytes)
        if code != 0:
            err = stderr.strip().splitlines()
            if any("rsync: command not found" in line or "rsync: not found" in line for line in err):
                outcome.detail = "rsync is not installed on the host: install it (provisioning does), then re-run"
            else:
                outcome.detail = f"rsync exit {code}: {err[-1] if err else ''}; re-run to resume"
            return outcome
        outcome.bytes_sent = _bytes_sent(stdout)
        args = ["finalize", job.dest, *expect] + (["--owner", job.owner] if job.owner else [])
        final = _run_verifier(job, args, timeout)
        outcome.hashed_on_host = len(final["hashed"])
        if not final["ok"]:
            bad = ", ".join(f"{b['path']}: {b['reason']}" for b in final["bad"])
            outcome.detail = f"verification on the host failed: {final['error'] or bad}"
            return outcome
        outcome.status, outcome.detail = "staged", f"verified on host ({final['files']} files)"
    except subprocess.TimeoutExpired as err:
        outcome.detail = f"timed out after {err.timeout:.0f} s; re-run to resume"
    except (OSError, RuntimeError) as err:
        outcome.detail = str(err)
    return outcome


def stage_to_hosts(
    staged: Path,
    jobs: Sequence[StageJob],
    parallel: int = 8,
    timeout: float = 6 * 3600,
    progress: HostProgress | None = None,
    bwlimit: str | None = None,
) -> list[HostOutcome]:
    """Copy the verified directory ``staged`` to every job's host and have each host verify it; ``progress``
    gets a row per host, ``bwlimit`` caps each rsync (its ``--bwlimit`` syntax, e.g. ``200M``)."""
    if bwlimit is not None and not BWLIMIT.match(bwlimit):
        raise ValueError(f"bwlimit {bwlimit!r} is not a rate rsync reads (e.g. 200M, 1.5G, 51200)")
    manifest = read_manifest(staged)
    # The engines check the controller before touching any host; this keeps a direct caller's failure one line too.
    uses = [Use.WEIGHTS] + ([Use.WEIGHTS_SSH] if any(job.host.hostname is not None for job in jobs) else [])
    try:
        require_controller(uses, python=False)
    except ControllerError as err:
        return [HostOutcome(job.host.name, "failed", str(err)) for job in jobs]
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [
            pool.submit(_stage_one, staged, manifest.repo, manifest.revision, job, timeout, progress, bwlimit)
            for job in jobs
        ]
        return [future.result() for future in futures]
