"""Adversarial strings through every destination: what the destination's own parser reads back is the
intended value, or the inventory is refused (and then only for a reason the destination has).

Parsers: systemd's unquoting, specifier and ``$`` rules (tests/support/systemd_syntax.py) for units and
EnvironmentFile=; ``sh`` itself for the secret script; python-debian's deb822 reader for apt files;
``shlex`` for shell words. 1,000 examples per destination.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from debian.deb822 import Deb822
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from ms4fleet import paths
from ms4fleet.config import AptRepo, ConfigError, HostConfig, ProvisionConfig, SecretRef
from ms4fleet.escape import systemd_env, systemd_word, unsafe_char
from ms4fleet.provision import (
    NVIDIA_KEY_FINGERPRINT,
    OsRelease,
    Pin,
    _preferences_file,
    _sources_file,
    container_pins,
)
from ms4fleet.secrets import env_file_script
from ms4fleet.serving import plan_host
from ms4fleet.values import HostPath
from tests.support.systemd_syntax import env_file, environment, exec_argv, unit_lines

# What breaks destinations: line breaks of every kind, NUL, quotes, substitutions, specifiers, separators.
SPECIAL = list("\n\r\t\x00\x0b\x0c\x85\u2028\u2029\u200b\u202e\ufeff%$`'\"\\;# =:{}()[]*?&|<>!~,@+-./hpnH0")
ADVERSARIAL = st.text(alphabet=st.one_of(st.sampled_from(SPECIAL), st.characters()), max_size=40)
# What a file name or an argv can hold at all (no lone surrogates).
ENCODABLE = st.text(
    alphabet=st.one_of(st.sampled_from(SPECIAL), st.characters(exclude_categories=("Cs",))), max_size=40
)
MANY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REVISION = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"


def _host(**sections: Any) -> dict[str, Any]:
    return {
        "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
        "ms4fleet_weights": {"revision": REVISION, "hf_token": {"env": "HF_TOKEN"}},
        **{f"ms4fleet_{k}": v for k, v in sections.items()},
    }


def _unit(data: dict[str, Any]) -> str:
    return plan_host(HostConfig.from_host_data("gpu-1", data)).replicas[0].unit_text


def _keys(unit: str) -> list[tuple[str, str]]:
    return [(section, key) for section, key, _ in unit_lines(unit)]


BASELINE_KEYS = {
    kind: _keys(_unit(_host(runtime={"kind": kind}, serving={"env": {"X": "1"}}))) for kind in ("docker", "native")
}


@MANY
@given(value=ADVERSARIAL, kind=st.sampled_from(["docker", "native"]))
def test_environment_values_reach_the_unit_unchanged(value: str, kind: str) -> None:
    try:
        unit = _unit(_host(runtime={"kind": kind}, serving={"env": {"X": value}}))
    except ConfigError as err:
        assert unsafe_char(value) is not None, err
        assert "serving.env" in str(err) and "\n" not in str(err)
        return
    assert _keys(unit) == BASELINE_KEYS[kind]  # no line added, none lost
    env: dict[str, str] = {}
    for _section, key, assigned in unit_lines(unit):
        if key == "Environment":
            env |= environment(assigned)
    assert env["X"] == value


@MANY
@given(value=ADVERSARIAL, kind=st.sampled_from(["docker", "native"]))
def test_extra_args_reach_execstart_unchanged(value: str, kind: str) -> None:
    args = ["--chat-template", value]
    try:
        unit = _unit(_host(runtime={"kind": kind}, serving={"env": {"X": "1"}, "extra_args": args}))
    except ConfigError as err:
        assert unsafe_char(value) is not None or (value.startswith("-") and value != "-") or value == ";", err
        assert "serving.extra_args" in str(err) and "\n" not in str(err)
        return
    assert _keys(unit) == BASELINE_KEYS[kind]
    (exec_start,) = [v for _, key, v in unit_lines(unit) if key == "ExecStart"]
    assert exec_argv(exec_start)[-2:] == args


@MANY
@given(word=ADVERSARIAL)
def test_every_word_and_assignment_reads_back(word: str) -> None:
    """The escapers alone, on any input: exact round trip, or a refusal for a control character."""
    try:
        quoted = systemd_word(word)
    except ValueError:
        assert unsafe_char(word) is not None or word == ";"
    else:
        assert exec_argv(quoted) == [word]
    try:
        assignment = systemd_env("NAME", word)
    except ValueError:
        assert unsafe_char(word) is not None
    else:
        assert environment(assignment) == {"NAME": word}


@MANY
@given(tail=ADVERSARIAL)
def test_weights_dirs_reach_execstartpre_unchanged(tail: str) -> None:
    directory = "/srv/" + tail
    try:
        config = HostConfig.from_host_data(
            "gpu-1", {**_host(), "ms4fleet_weights": {**_host()["ms4fleet_weights"], "dir": directory}}
        )
    except ConfigError as err:
        assert "weights.dir" in str(err) and "\n" not in str(err)
        return
    plan = plan_host(config)
    (check,) = [v for _, key, v in unit_lines(plan.replicas[0].unit_text) if key == "ExecStartPre" and "verify" in v]
    argv = exec_argv(check.removeprefix("+"))
    assert argv[3] == plan.model_dir and plan.model_dir.startswith(config.weights.dir + "/")  # type: ignore[union-attr]
    assert ".." not in plan.model_dir.split("/")


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(name=ENCODABLE.filter(lambda s: "\x00" not in s and "/" not in s), value=ENCODABLE)
def test_secret_script_reads_any_file_and_writes_an_exact_env_file(tmp_path: Path, name: str, value: str) -> None:
    """The script quotes any secret path (validation aside: the ref is built unchecked) and the
    EnvironmentFile it writes reads back as the secret, or it refuses a first line systemd cannot hold."""
    work = Path(subprocess.check_output(["mktemp", "-d", "-p", str(tmp_path)], text=True).strip())
    secret = work / f"x{name}"
    secret.write_bytes((value + "\n").encode())
    secret.chmod(0o600)
    config = HostConfig.from_host_data("gpu-1", _host(serving={"api_key": {"file": "/etc/ms4fleet/api-key"}}))
    ref = SecretRef.model_construct(file=str(secret), env=None)
    unchecked = config.model_copy(update={"serving": config.serving.model_copy(update={"api_key": ref})})
    etc = work / "etc"
    script = env_file_script(unchecked).replace(shlex.quote(paths.ETC_DIR), shlex.quote(str(etc)))
    script = script.replace(shlex.quote(paths.ENV_FILE), shlex.quote(str(etc / "vllm.env")))
    done = subprocess.run(["sh", "-c", script], capture_output=True)
    first_line = value.split("\n", maxsplit=1)[0]
    if done.returncode == 3:
        assert any(not (" " <= c <= "~") for c in first_line), done.stderr
        # The message names the file and never quotes its content.
        message = f"secret file {secret}: its first line must be printable ASCII (no NUL, CR, tab)\n"
        assert done.stderr == message.encode()
        return
    assert done.returncode == 0, done.stderr
    assert env_file((etc / "vllm.env").read_text()) == {"VLLM_API_KEY": first_line}


APT_TEXT = st.one_of(ADVERSARIAL, ADVERSARIAL.map(lambda s: "https://mirror.example/ubuntu" + s))


@MANY
@example(url="https://mirror.example/ubuntu", suite="/", component="main")
@example(url="file:/srv/mirror", suite="noble", component="restricted")
@given(url=APT_TEXT, suite=st.one_of(st.just("/"), ADVERSARIAL), component=st.one_of(st.just("main"), ADVERSARIAL))
def test_apt_sources_read_back_as_one_paragraph(url: str, suite: str, component: str) -> None:
    try:
        repo = AptRepo(
            url=url,
            suite=suite,
            components=[component],
            key_url="https://mirror.example/key.asc",
            key_fingerprint=NVIDIA_KEY_FINGERPRINT,
        )
    except ValidationError:
        return
    body = _sources_file(repo).content
    paragraphs = [dict(p) for p in Deb822.iter_paragraphs(body.splitlines(keepends=True))]
    assert paragraphs == [
        {
            "Types": "deb",
            "URIs": url,
            "Suites": suite,
            "Components": component,
            "Signed-By": f"/etc/apt/keyrings/ms4fleet-nvidia.asc {NVIDIA_KEY_FINGERPRINT}",
        }
    ]


@MANY
@example(tail=".05")
@example(tail="")
@given(tail=ADVERSARIAL)
def test_apt_pins_read_back_as_one_paragraph(tail: str) -> None:
    version = "580.95" + tail
    try:
        ProvisionConfig(driver_branch=580, driver_version=version)
    except ValidationError:
        return
    body = _preferences_file([Pin(("nvidia-driver-580-open",), f"{version}-*")]).content
    paragraphs = [dict(p) for p in Deb822.iter_paragraphs(body.splitlines(keepends=True))]
    assert paragraphs == [{"Package": "nvidia-driver-580-open", "Pin": f"version {version}-*", "Pin-Priority": "1001"}]


@MANY
@example(tail=".5.*")
@example(tail=".*")
@given(tail=ADVERSARIAL)
def test_package_series_pins_read_back_as_their_own_paragraphs(tail: str) -> None:
    series = "27" + tail
    versions = {"docker_version": series, "containerd_version": series, "container_toolkit_version": series}
    try:
        config = HostConfig.from_host_data(
            "h", {"ms4fleet_gpu": {"kind": "h100-pcie", "count": 1}, "ms4fleet_provision": versions}
        )
    except ConfigError:
        return
    body = _preferences_file(container_pins(config, OsRelease("ubuntu", "24.04"))).content
    paragraphs = [dict(p) for p in Deb822.iter_paragraphs(body.splitlines(keepends=True))]
    assert [p["Package"].split()[0] for p in paragraphs] == ["docker.io", "containerd", "nvidia-container-toolkit"]
    assert {p["Pin"] for p in paragraphs} == {f"version {series}"} and series.endswith(".*")


@MANY
@example(user="ms4fleet")
@given(user=ADVERSARIAL)
def test_accepted_user_names_are_one_bare_shell_word(user: str) -> None:
    try:
        ProvisionConfig(service_user=user)
    except ValidationError:
        return
    assert shlex.split(f"useradd --system {user}") == ["useradd", "--system", user]
    assert shlex.quote(user) == user and user not in {"root", "toor"}


@MANY
@given(path=ADVERSARIAL.map(lambda s: "/etc/ms4fleet/" + s))
def test_accepted_host_paths_are_normal_and_one_shell_word(path: str) -> None:
    try:
        checked = TypeAdapter(HostPath).validate_python(path)
    except ValidationError:
        return
    assert shlex.split(checked) == [checked] and ".." not in checked.split("/") and "//" not in checked


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "https://mirror.example/ubuntu\nTrusted: yes"),
        ("url", "https://mirror.example/ubuntu trusted=yes"),
        ("suite", "/\nTrusted: yes"),
        ("url", "https://mirror.example/\u2028Trusted: yes"),
        ("key_fingerprint", "EB693B3035CD5710E231E123A4B469963BF863CC\nTrusted: yes"),
        ("key_fingerprint", "EB693B3035CD5710E231E123A4B469963BF863CC trusted=yes"),
        ("key_fingerprint", "3BF863CC"),
    ],
)
def test_a_field_smuggling_an_apt_option_is_refused(field: str, value: str) -> None:
    fields = {
        "url": "https://mirror.example/",
        "suite": "/",
        "key_url": "https://mirror.example/k.asc",
        "key_fingerprint": NVIDIA_KEY_FINGERPRINT,
        field: value,
    }
    with pytest.raises(ValidationError):
        AptRepo(**fields)
