"""The controller's requirements (``ms4fleet.controller``): programs found or not on a PATH, their versions
read from what they print, Python packages against the declared ranges, the one line a failure gives, and
``ms4fleet doctor``. The scripts' own program checks, which stop with one line, are here too."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ms4fleet import __version__
from ms4fleet.cli import main
from ms4fleet.controller import (
    PROGRAMS,
    ControllerError,
    Program,
    Use,
    check_distribution,
    controller_checks,
    deploy_uses,
    python_checks,
    require_controller,
)

ROOT = Path(__file__).resolve().parents[2]
RSYNC, SSH = PROGRAMS


def _fake(bin_dir: Path, name: str, stdout: str = "", stderr: str = "") -> Path:
    """An executable ``name`` in ``bin_dir`` that prints ``stdout`` and ``stderr`` whatever its arguments."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\nprintf '%s' '{stdout}'\nprintf '%s' '{stderr}' >&2\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("program", "output", "version"),
    [
        (RSYNC, "rsync  version 3.2.7  protocol version 31\nCopyright (C) 1996-2022", "3.2.7"),
        (RSYNC, "rsync  version v3.4.1  protocol version 32\n", "3.4.1"),
        (RSYNC, "rsync  version 2.6.9  protocol version 29\n", "2.6.9"),
        (SSH, "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024\n", "9.2"),
        (SSH, "OpenSSH_8.9p1 Ubuntu-3ubuntu0.10, OpenSSL 3.0.2 15 Mar 2022\n", "8.9"),
        (RSYNC, "usage: something else\n", None),
    ],
)
def test_versions_are_read_from_what_each_program_prints(program: Program, output: str, version: str | None) -> None:
    assert program.version_in(output) == version


def test_a_missing_program_is_one_line_naming_it_what_needs_it_and_its_package(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(ControllerError) as err:
        require_controller({Use.WEIGHTS, Use.WEIGHTS_SSH}, python=False, path=str(empty))
    assert str(err.value) == (
        "controller: rsync not found on PATH (needed for weights staging): install it with `apt-get install rsync`"
    )
    _fake(empty, "rsync", "rsync  version 3.2.7  protocol version 31\n")
    with pytest.raises(ControllerError) as err:
        require_controller({Use.WEIGHTS, Use.WEIGHTS_SSH}, python=False, path=str(empty))
    assert str(err.value) == (
        "controller: ssh not found on PATH (needed for weights staging over SSH): "
        "install it with `apt-get install openssh-client`"
    )


def test_found_programs_report_version_and_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    rsync = _fake(bin_dir, "rsync", "rsync  version 3.2.7  protocol version 31\n")
    # ssh -V answers on stderr.
    ssh = _fake(bin_dir, "ssh", stderr="OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15\n")
    checks = require_controller(set(Use), python=False, path=str(bin_dir))
    assert [(c.name, c.ok, c.found, c.wants) for c in checks] == [
        ("rsync", True, f"3.2.7 ({rsync})", ">= 3.0.0"),
        ("ssh", True, f"9.2 ({ssh})", "any version"),
    ]
    assert checks[1].needed_for == "weights staging over SSH and the Ansible engine's SSH connections"


def test_a_program_older_than_its_minimum_or_without_a_version_fails(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    rsync = _fake(bin_dir, "rsync", "rsync  version 2.6.9  protocol version 29\n")
    with pytest.raises(ControllerError) as err:
        require_controller({Use.WEIGHTS}, python=False, path=str(bin_dir))
    assert str(err.value) == (
        f"controller: rsync 2.6.9 at {rsync} is older than 3.0.0 (--append-verify) (needed for weights staging): "
        "upgrade it with `apt-get install rsync` (or put a newer one first on PATH)"
    )
    _fake(bin_dir, "rsync", "not an rsync\n")
    (check,) = controller_checks({Use.WEIGHTS}, python=False, path=str(bin_dir))
    assert not check.ok and check.problem == f"at {rsync} did not report its version to `rsync --version`"
    # ssh has no minimum: found is enough, whatever it prints.
    _fake(bin_dir, "ssh", "")
    (check,) = controller_checks({Use.ANSIBLE_SSH}, python=False, path=str(bin_dir))
    assert check.ok and check.found.startswith("unknown version")


def test_only_what_the_run_uses_is_required(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "rsync", "rsync  version 3.2.7  protocol version 31\n")
    # pyinfra connects with paramiko: a deploy of the controller itself, or over SSH without weights, runs no ssh.
    assert deploy_uses("pyinfra", weights=True, remote=False) == {Use.WEIGHTS}
    assert deploy_uses("pyinfra", weights=True, remote=True) == {Use.WEIGHTS, Use.WEIGHTS_SSH}
    assert deploy_uses("ansible", weights=False, remote=True) == {Use.ANSIBLE_SSH}
    assert deploy_uses("ansible", weights=False, remote=False) == set()
    assert deploy_uses(None, weights=True, remote=True) == {Use.WEIGHTS, Use.WEIGHTS_SSH}
    require_controller(deploy_uses("pyinfra", weights=True, remote=False), python=False, path=str(bin_dir))
    with pytest.raises(ControllerError, match=r"^controller: ssh not found on PATH"):
        require_controller(deploy_uses("ansible", weights=False, remote=True), python=False, path=str(bin_dir))
    assert controller_checks(deploy_uses("ansible", weights=False, remote=False), python=False) == []


def test_python_distributions_against_the_declared_ranges() -> None:
    bad = check_distribution("pyinfra<4,>=3.10", "4.0.1", "the pyinfra engine")
    assert not bad.ok and bad.line() == (
        "controller: pyinfra 4.0.1 is not <4,>=3.10 (needed for the pyinfra engine): "
        "install it with `pip install 'pyinfra<4,>=3.10'`"
    )
    absent = check_distribution("ansible-core<2.21,>=2.19", None, "the Ansible engine")
    assert absent.line() == (
        f"controller: ansible-core is not installed for {sys.executable} (needed for the Ansible engine): "
        "install it with `pip install 'ansible-core<2.21,>=2.19'`"
    )
    assert check_distribution("pydantic<3,>=2.7", "2.14.4", "ms4fleet").ok


def test_python_checks_cover_every_declared_runtime_dependency() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    names = {re.split(r"[<>=!~\[; ]", requirement)[0] for requirement in declared}
    checks = python_checks()
    assert {c.name for c in checks} == names | {"python", "ms4fleet"}
    # The dev venv this runs in meets them all.
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]
    assert {c.name for c in python_checks(["pyinfra"])} == names - {"ansible-core"} | {"python", "ms4fleet"}
    engine = {c.name: c.needed_for for c in checks}
    assert engine["pyinfra"] == "the pyinfra engine" and engine["ansible-core"] == "the Ansible engine"
    assert engine["pydantic"] == "ms4fleet"


def test_ms4fleet_itself_not_installed_is_one_line() -> None:
    (check,) = python_checks(installed=lambda name: None)
    assert check.line() == (
        "controller: ms4fleet is not installed as a distribution (its metadata lists what it needs) "
        "(needed for every command): install it with `pip install .` in its source tree (or `pip install ms4fleet`)"
    )
    (stale,) = python_checks(installed=lambda name: "0.0.1")
    assert stale.problem == f"metadata says 0.0.1, but the code imported is {__version__}"


def test_doctor_prints_every_check_and_exits_by_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "rsync", "rsync  version 3.2.7  protocol version 31\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert main(["doctor", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["rsync"]["ok"] and by_name["rsync"]["found"] == f"3.2.7 ({bin_dir / 'rsync'})"
    assert not by_name["ssh"]["ok"] and by_name["ssh"]["fix"] == "install it with `apt-get install openssh-client`"
    assert by_name["pyinfra"]["ok"] and by_name["ansible-core"]["ok"]

    assert main(["doctor"]) == 1
    out, err = capsys.readouterr()
    assert "ms4fleet doctor" in out and "FAIL" in out and "3.2.7" in out
    assert err.splitlines() == [
        "ms4fleet: controller: ssh not found on PATH (needed for weights staging over SSH and the Ansible "
        "engine's SSH connections): install it with `apt-get install openssh-client`"
    ]

    _fake(bin_dir, "ssh", stderr="OpenSSH_9.2p1 Debian-2+deb12u3\n")
    assert main(["doctor", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_ensure_docker_installs_every_controller_program() -> None:
    """scripts/ensure-docker.sh prepares this machine as a controller too: same programs, same packages."""
    script = (ROOT / "scripts" / "ensure-docker.sh").read_text(encoding="utf-8")
    listed = re.search(r'^PROGRAMS="([^"]+)"', script, re.MULTILINE)
    assert listed is not None
    pairs = set(listed.group(1).split())
    assert {f"{p.name}:{p.package}" for p in PROGRAMS} <= pairs
    assert "dockerd:docker.io" in pairs  # the daemon, not the client


def _bin_with(tmp_path: Path, *names: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        target = next(Path(d) / name for d in os.environ["PATH"].split(os.pathsep) if (Path(d) / name).exists())
        (bin_dir / name).symlink_to(target)
    return bin_dir


def test_ensure_docker_without_apt_stops_with_one_line_naming_the_packages(tmp_path: Path) -> None:
    bin_dir = _bin_with(tmp_path, "id")
    done = subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "ensure-docker.sh")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "ensure-docker: error: missing docker.io debootstrap dpkg-dev gnupg rsync openssh-client curl procps tmux "
        "chromium-headless-shell "
        "and no apt-get here: install them with your package manager"
    ]


def test_ensure_vllm_cpu_without_flock_stops_with_one_line(tmp_path: Path) -> None:
    bin_dir = _bin_with(tmp_path, "sha256sum", "cut")
    (bin_dir / "python3").symlink_to(sys.executable)
    done = subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "ensure-vllm-cpu.sh")],
        env={"PATH": str(bin_dir), "MS4FLEET_CACHE": str(tmp_path / "cache"), "MS4FLEET_VLLM_PYTHON": "python3"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "ensure-vllm-cpu: error: flock not found on PATH: install it with `apt-get install util-linux`"
    ]
    assert not (tmp_path / "cache").exists()


def test_ensure_python_venv_without_apt_stops_with_one_line(tmp_path: Path) -> None:
    bin_dir = _bin_with(tmp_path, "id")
    # A python3 whose venv module is missing, as Debian's without python3.X-venv.
    fake = bin_dir / "python3"
    fake.write_text(f'#!/bin/sh\ncase "$2" in *ensurepip*) exit 1 ;; esac\nexec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    done = subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "ensure-python-venv.sh")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    package = f"python{sys.version_info.major}.{sys.version_info.minor}-venv"
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"ensure-python-venv: error: python3 cannot create a venv (no ensurepip module): install {package} "
        f"(`apt-get install {package}`), then re-run"
    ]
