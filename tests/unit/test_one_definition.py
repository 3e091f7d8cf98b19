"""No decision in two places: each of these has one definition in the core, and both engines take it from there.

A literal or an expression that re-derives one of them anywhere else in the shipped code (src/, the collection's
plugins/ roles/ playbooks/, deploy.py) fails here, naming the file.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from ms4fleet import paths, provision, proxy
from ms4fleet.config import DEFAULT_GPU_MEMORY_UTILIZATION, HostConfig
from ms4fleet.headroom import check_headroom
from ms4fleet.rollout import lb, release
from ms4fleet.rollout.cli import add_rollout_arguments, policy_from_args
from ms4fleet.rollout.waves import Policy
from ms4fleet.serving import plan_host
from ms4fleet.weights.stage import DEFAULT_STAGING

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("src", "plugins", "roles", "playbooks", "deploy.py")
SUFFIXES = {".py", ".yml", ".yaml", ".j2", ".toml", ".cfg"}

# ``canary`` or ``max_unavailable`` given the default 1 (a parameter, an option, a Jinja default).
_ONE_HOST_DEFAULT = r"(canary|max_unavailable)\b.*\bdefault(=|\()\s*1\b|(canary|max_unavailable)\s*(:\s*int)?\s*=\s*1\b"
# decision -> (the one file that defines it, a pattern that re-deciding it elsewhere would contain)
DECISIONS = {
    "weights root": ("src/ms4fleet/paths.py", re.escape(paths.WEIGHTS_ROOT)),
    "staging directory": ("src/ms4fleet/weights/stage.py", r"/var/cache/ms4fleet/weights|~/\.cache/ms4fleet/weights"),
    "utilization default": ("src/ms4fleet/config.py", r"(?<![\d.])0\.9[02]?\b(?![\d.])"),
    "served-model-name fallback": ("src/ms4fleet/serving.py", r"served_model_name\s+or\b"),
    "image if docker": ("src/ms4fleet/serving.py", r"runtime\.image\b.*\bif\b|if\b.*kind\s*[!=]=\s*.docker.*image"),
    "max_model_len default": ("src/ms4fleet/catalog/__init__.py", r"or\s+\w*\.?default_max_model_len"),
    # What the host plan decides once for both engines.
    "verification gate checks": ("src/ms4fleet/hostplan.py", r"DEFAULT_CHECKS\s*&|&\s*DEFAULT_CHECKS"),
    "OS planned before the host is read": ("src/ms4fleet/hostplan.py", r"OsRelease\(\s*[\"'][a-z]"),
    "image archive and staging inventory keys": (
        "src/ms4fleet/hostplan.py",
        r"[\"'](vllm_image_archive|weights_staging_dir)[\"']",
    ),
    "where a replica answers on its host": ("src/ms4fleet/serving.py", r"VLLM_ADDRESS\s*=\s*[\"']"),
    "the replicas' derived ports": ("src/ms4fleet/config.py", r"(METRICS|INTERNAL)_PORT_OFFSET\s*=\s*\d"),
    "verification timeout": ("src/ms4fleet/verify.py", r"timeout_s\s*=\s*120|DEFAULT_TIMEOUT_S\s*=\s*\d"),
    "the service user's shell": ("src/ms4fleet/provision.py", r"/s?bin/(nologin|false)\b"),
    "initramfs rebuild after the nouveau blacklist": ("src/ms4fleet/provision.py", r"update-initramfs|\bdracut\b"),
    "where staged release units wait": ("src/ms4fleet/rollout/release.py", r"RELEASES_DIR\}?/staged|releases/staged"),
    "rollout wave default": ("src/ms4fleet/rollout/waves.py", r"[\"']25%[\"']|percent=25\b"),
    "rollout canary and max-unavailable defaults": ("src/ms4fleet/rollout/waves.py", _ONE_HOST_DEFAULT),
}

# The engines (pyinfra's package and deploy, the collection) name no host path the core defines: they read it
# from the plan or import it. Every such constant, by its value.
ENGINES = ("src/ms4fleet_pyinfra", "plugins", "roles", "playbooks", "deploy.py")
HOST_PATHS = {
    f"{module.__name__}.{name}": value
    for module in (paths, provision, proxy, lb, release)
    for name, value in vars(module).items()
    if name.isupper() and isinstance(value, str) and value.startswith("/") and value.count("/") > 1
}


def _shipped_files(parts: tuple[str, ...] = SHIPPED) -> list[Path]:
    out: list[Path] = []
    for part in parts:
        base = ROOT / part
        files = [base] if base.is_file() else base.rglob("*")
        out += [p for p in files if p.is_file() and p.suffix in SUFFIXES and ".egg-info" not in str(p)]
    return sorted(out)


@pytest.mark.parametrize("decision", sorted(DECISIONS))
def test_one_definition(decision: str) -> None:
    home, pattern = DECISIONS[decision]
    where = {
        f"{path.relative_to(ROOT)}:{number}"
        for path in _shipped_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(pattern, line) and str(path.relative_to(ROOT)) != home
    }
    assert where == set(), f"{decision} is decided outside {home}"
    assert any(re.search(pattern, line) for line in (ROOT / home).read_text(encoding="utf-8").splitlines()), home


@pytest.mark.parametrize("constant", sorted(HOST_PATHS))
def test_engines_copy_no_host_path_of_the_core(constant: str) -> None:
    value = HOST_PATHS[constant]
    where = {
        f"{path.relative_to(ROOT)}:{number}"
        for path in _shipped_files(ENGINES)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if value in line
    }
    assert where == set(), f"{constant} ({value}) is copied into an engine"


def test_playbooks_reach_replicas_where_the_plan_says() -> None:
    """Drain and status read a replica at the plan's address (``replicas[].url``), never a loopback literal."""
    for path in _shipped_files(("playbooks", "roles")):
        assert "127.0.0.1" not in path.read_text(encoding="utf-8"), path.relative_to(ROOT)


def test_rollout_command_defaults_are_the_core_policy() -> None:
    parser = argparse.ArgumentParser()
    add_rollout_arguments(parser)
    args = parser.parse_args(["inventory.py"])
    assert policy_from_args(args) == Policy()


def _config(**serving: object) -> HostConfig:
    return HostConfig.from_host_data(
        "h",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_serving": serving,
        },
    )


def test_the_plan_carries_each_decision_the_engines_read() -> None:
    plan = plan_host(_config())
    profile = plan.profile
    assert plan.served_model_name == profile.served_model_name
    assert plan.image == "vllm/vllm-openai:v0.32.0"
    assert plan.max_model_len == profile.default_max_model_len
    assert plan.model_dir.startswith(paths.WEIGHTS_ROOT + "/")
    argv = plan.replicas[0].argv
    assert argv[argv.index("--gpu-memory-utilization") + 1] == f"{DEFAULT_GPU_MEMORY_UTILIZATION:.2f}"
    named = plan_host(_config(served_model_name="small4", max_model_len=32768))
    assert (named.served_model_name, named.max_model_len) == ("small4", 32768)
    assert str(DEFAULT_STAGING) == "/var/cache/ms4fleet/weights"


def test_headroom_defaults_to_the_config_utilization() -> None:
    """The gate judges the same share of the GPU the service will take, when the caller names none."""
    signature = check_headroom.__kwdefaults__ or {}
    assert signature["gpu_memory_utilization"] == DEFAULT_GPU_MEMORY_UTILIZATION
