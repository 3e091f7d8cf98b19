"""The README's "Using it on real hosts" install, followed in a clean venv: build the ms4fleet wheel and the
ms4fleet.fleet collection from a fresh copy of the checkout, install both, document every module and filter
with ``ansible-doc``, run the collection's actions from a playbook, plan the example fleet with the CLI, and
run the packaged pyinfra deploy (``ms4fleet_pyinfra.deploy``) with ``--dry`` against a sim host. Last, the
same controller without the ms4fleet package: every plugin says in one line what to install."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ms4fleet
from tests.packaging.worktree import tracked_copy
from tests.pyinfra import simfleet

pytestmark = [pytest.mark.sim, pytest.mark.slow]

FLEET = "pkg"
ROOT = Path(__file__).resolve().parents[2]
VERSION = ms4fleet.__version__
H200_PROBE = ROOT / "tests" / "data" / "h200" / "2026-11-29" / "probe-nvml-idle.json"


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    out = done.stdout + done.stderr
    if check:
        assert done.returncode == 0, f"{' '.join(map(str, argv))} exited {done.returncode}:\n{out[-4000:]}"
    return out


def test_the_readme_install_steps_in_a_clean_venv(tmp_path: Path) -> None:
    tree = tracked_copy(tmp_path / "checkout")
    dist = tmp_path / "dist"
    # A clean venv (nothing from the dev venv); the wheel built by its pip from a fresh copy of the checkout.
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    bin_dir = venv / "bin"
    run(bin_dir / "pip", "wheel", "--quiet", "--no-deps", "-w", dist, ".", cwd=tree)
    wheel = dist / f"ms4fleet-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert not [n for n in names if n.startswith("ms4fleet_sim")], "the production wheel ships the simulator"
    assert {n.split("/")[0] for n in names} == {
        "ms4fleet",
        "ms4fleet_pyinfra",
        "ms4fleet_ansible",
        f"ms4fleet-{VERSION}.dist-info",
    }
    assert {"ms4fleet/py.typed", "ms4fleet_pyinfra/py.typed", f"ms4fleet-{VERSION}.dist-info/licenses/LICENSE"} <= set(
        names
    )

    # Install the wheel, then build and install the collection (into its own path) with its ansible-galaxy.
    run(bin_dir / "pip", "install", "--quiet", wheel, cwd=tmp_path)
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
    }
    work = tmp_path / "work"  # outside the checkout: no ansible.cfg, no collection from the tree
    work.mkdir()
    run(bin_dir / "ansible-galaxy", "collection", "build", "--output-path", dist, cwd=tree, env=env)
    tarball = dist / f"ms4fleet-fleet-{VERSION}.tar.gz"
    run(bin_dir / "ansible-galaxy", "collection", "install", tarball, "-p", tmp_path / "collections", cwd=work, env=env)
    assert "ModuleNotFoundError" in run(bin_dir / "python", "-c", "import ms4fleet_sim", cwd=work, check=False)

    # ansible-doc: every module and filter the collection has, each naming its controller requirement.
    modules = sorted(f"ms4fleet.fleet.{p.stem}" for p in (ROOT / "plugins" / "modules").glob("*.py"))
    filters = sorted(f"ms4fleet.fleet.{p.stem}" for p in (ROOT / "plugins" / "filter").glob("*.yml"))
    for kind, names in (("module", modules), ("filter", filters)):
        listed = json.loads(
            run(bin_dir / "ansible-doc", "-t", kind, "-l", "ms4fleet.fleet", "--json", cwd=work, env=env)
        )
        assert sorted(listed) == names, kind
        docs = json.loads(run(bin_dir / "ansible-doc", "-t", kind, "--json", *names, cwd=work, env=env))
        assert sorted(docs) == names
        for name, doc in docs.items():
            assert doc["doc"]["requirements"] == [
                f"ms4fleet == {VERSION}, the Python package, on the controller (the collection's requirements.txt)"
            ], name
    run(bin_dir / "ansible-playbook", "--syntax-check", "-i", "localhost,", "ms4fleet.fleet.site", cwd=work, env=env)

    # Actions on this GPU-less machine: the probe runs on localhost; headroom judges the real H200's report.
    playbook, results = work / "check.yml", work / "results.json"
    playbook.write_text(
        "- hosts: localhost\n"
        "  connection: local\n"
        "  gather_facts: false\n"
        "  vars:\n"
        "    ms4fleet_gpu: {kind: h200-sxm, count: 1}\n"
        f"    ms4fleet_weights: {{source: mirror, mirror_url: 'http://127.0.0.1:9', allow_insecure: true, revision: '{'5e' * 20}'}}\n"
        "  tasks:\n"
        "    - ms4fleet.fleet.probe:\n"
        "      register: here\n"
        f"    - ms4fleet.fleet.headroom:\n        probe: \"{{{{ lookup('file', '{H200_PROBE}') | from_json }}}}\"\n"
        "      register: h200\n"
        f"    - ansible.builtin.copy:\n        content: \"{{{{ {{'here': here, 'h200': h200}} | to_json }}}}\"\n"
        f"        dest: {results}\n"
        "        mode: '0644'\n"
    )
    run(bin_dir / "ansible-playbook", "-i", "localhost,", playbook, cwd=work, env=env)
    registered = json.loads(results.read_text())
    probe, headroom = registered["here"], registered["h200"]
    assert (probe["gpu_count"], probe["probe"]["gpus"]) == (0, []), probe
    assert headroom["fits"] is True and [r["verdict"] for r in headroom["replicas"]] == ["fits"], headroom

    # The CLI from the wheel: it plans the example fleet and has no simulator command.
    plan = run(bin_dir / "ms4fleet", "plan", tree / "inventory" / "example.py", cwd=work, env=env)
    assert "gpu-h100-solo does-not-fit" in plan
    assert "sim" not in run(bin_dir / "ms4fleet", "--help", cwd=work, env=env).split("rollout")[0]

    # The packaged pyinfra deploy from the clean venv against a sim host (brought up by the dev venv), planning.
    fleet = simfleet.ensure_fleet(FLEET, 1)
    host = fleet.hosts[0]
    try:
        dry = simfleet.pyinfra(fleet, "--dry", program=bin_dir / "pyinfra", deploy="ms4fleet_pyinfra.deploy")
        untouched = fleet.sh(host, "dpkg-query -W -f='${Status}' nvidia-driver-580-open 2>&1 || true")
    finally:
        fleet.down()
    assert dry.rc == 0, dry.output[-4000:]
    assert f"[{host}] to converge" in dry.output and f"[{host}] Ready: deploy" in dry.output, dry.output[-4000:]
    assert "headroom: replica 0 fits; replica 1 fits; replica 2 fits; replica 3 fits" in dry.output, dry.output[-4000:]
    assert "Starting operation" not in dry.output
    assert "install ok installed" not in untouched, untouched

    # The same controller without the ms4fleet package: one line saying what to install, action and filter.
    run(bin_dir / "pip", "uninstall", "--quiet", "--yes", "ms4fleet", cwd=work)
    python = (bin_dir / "ansible").read_text().splitlines()[0].removeprefix("#!")
    line = (
        f"ms4fleet.fleet {VERSION} needs the ms4fleet Python package {VERSION} on the controller, and {python} has "
        f"none: {python} -m pip install ms4fleet=={VERSION}"
    )
    action = run(bin_dir / "ansible", "localhost", "-m", "ms4fleet.fleet.probe", cwd=work, env=env, check=False)
    assert [x for x in action.splitlines() if x.startswith("[ERROR]")] == [f"[ERROR]: {line}"], action
    assert "Traceback" not in action
    filtered = run(
        bin_dir / "ansible", "localhost", "-m", "debug", "-a", "msg={{ {} | ms4fleet.fleet.serving_plan }}",
        cwd=work, env=env, check=False,
    )  # fmt: skip
    assert f"The filter plugin 'ms4fleet.fleet.serving_plan' failed: {line}" in filtered, filtered
