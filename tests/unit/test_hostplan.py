"""HostPlan: one host's desired state as stable JSON, with a digest over all of it and no secret value."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.hostplan import DEFAULT_OS, HostPlan, digest_of, host_plan
from ms4fleet.imagearchive import archive_image_id
from ms4fleet.provision import OsRelease

REVISION = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
SECRET = "sk-do-not-print-4242"
TOKEN = "hf_token_value_that_must_not_leak"


_SECTIONS: dict[str, Any] = {
    "gpu": {"kind": "h200-sxm", "count": 8},
    "serving": {"api_key": {"env": "TEST_VLLM_KEY"}},
    "weights": {"revision": REVISION, "hf_token": {"env": "TEST_HF_TOKEN"}},
}


def _config(**sections: dict[str, Any]) -> HostConfig:
    data: dict[str, Any] = {f"ms4fleet_{name}": value for name, value in _SECTIONS.items()}
    data.update({f"ms4fleet_{name}": value for name, value in sections.items()})
    return HostConfig.from_host_data("gpu-1", data)


def _plan(**sections: dict[str, Any]) -> HostPlan:
    return host_plan(_config(**sections))


def test_the_digest_is_stable_and_covers_the_json() -> None:
    first, second = _plan().to_json(), _plan().to_json()
    assert first == second and len(first["digest"]) == 64
    assert digest_of(first) == first["digest"]
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


@pytest.mark.parametrize(
    "change",
    [
        {"serving": {"max_num_seqs": 32}},
        {"serving": {"env": {"NCCL_DEBUG": "INFO"}}},
        {"runtime": {"kind": "native"}},
        {"runtime": {"image": "vllm/vllm-openai:v0.31.0"}},
        {"provision": {"driver_version": "580.82.07"}},
        {"provision": {"reboot": "never"}},
        {"provision": {"docker_daemon_options": {"log-driver": "journald"}}},
        {"weights": {"revision": "0" * 40, "hf_token": {"env": "TEST_HF_TOKEN"}}},
        {"gpu": {"kind": "h200-sxm", "count": 4}},
    ],
    ids=json.dumps,
)
def test_the_digest_changes_when_any_part_changes(change: dict[str, Any]) -> None:
    assert _plan(**change).digest != _plan().digest


def test_the_digest_changes_with_the_os_the_image_source_and_the_staging(tmp_path: Path) -> None:
    base = host_plan(_config())
    assert host_plan(_config(), OsRelease("ubuntu", "24.04")).digest != base.digest
    archive = _write_archive(tmp_path / "vllm.tar", [{"Config": "aa.json", "RepoTags": [], "Layers": []}])
    loaded = host_plan(_config(), image_archive=str(archive)).digest
    assert loaded != base.digest
    _write_archive(archive, [{"Config": "bbb.json", "RepoTags": [], "Layers": []}])
    assert host_plan(_config(), image_archive=str(archive)).digest != loaded
    assert host_plan(_config(), staging_dir="/data/staging").digest != base.digest


def test_the_plan_states_how_the_weights_are_staged_through_peers() -> None:
    weights = {"revision": REVISION, "hf_token": {"env": "TEST_HF_TOKEN"}}
    assert _plan().to_json()["weights"]["peers"] is None
    peers = _plan(weights={**weights, "peers": True, "peer_fanout": 3, "peer_address": "10.0.0.7"})
    assert peers.to_json()["weights"]["peers"] == {"address": "10.0.0.7", "fanout": 3, "seeds": 1, "port": 8790}
    assert peers.digest != _plan().digest
    # Settings of a tree that is not used change nothing.
    assert _plan(weights={**weights, "peer_fanout": 3}).digest == _plan().digest


def test_a_tampered_plan_no_longer_matches_its_digest() -> None:
    doc = _plan().to_json()
    doc["files"][0]["content"] += "# extra\n"
    assert digest_of(doc) != doc["digest"]


def test_no_secret_value_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_VLLM_KEY", SECRET)
    monkeypatch.setenv("TEST_HF_TOKEN", TOKEN)
    text = json.dumps(_plan().to_json())
    assert SECRET not in text and TOKEN not in text
    doc = _plan().to_json()
    # References only: where the secret comes from and where it lands.
    assert doc["secrets"]["refs"] == [
        {
            "variable": "VLLM_API_KEY",
            "name": "api_key",
            "host_path": "/etc/ms4fleet/secrets/api_key",
            "file": None,
            "env": "TEST_VLLM_KEY",
            "generated": False,
        }
    ]
    assert doc["weights"]["token"] == {"file": None, "env": "TEST_HF_TOKEN"}
    assert all(f["path"] != doc["secrets"]["env_file"]["path"] for f in doc["files"])


def test_json_round_trip() -> None:
    doc = _plan().to_json()
    back = json.loads(json.dumps(doc))
    assert back == doc and digest_of(back) == doc["digest"]
    # The same plan with its bytes in a shared table (how `ms4fleet plan --json` prints a fleet).
    contents: dict[str, str] = {}
    shared = _plan().to_json(contents)
    assert all("content" not in f for f in shared["files"]) and shared["digest"] == doc["digest"]
    assert {f["sha256"]: f["content"] for f in doc["files"] + doc["merged_files"]} == contents


def test_errors_name_the_host_though_shapes_are_planned_once() -> None:
    host_plan(_config())
    with pytest.raises(ConfigError, match=r"^gpu-1: os ubuntu 20\.04 is not supported"):
        host_plan(_config(), OsRelease("ubuntu", "20.04"))
    other = HostConfig.from_host_data("gpu-2", {f"ms4fleet_{k}": v for k, v in _SECTIONS.items()})
    assert host_plan(other).host == "gpu-2" and host_plan(other).serving.host == "gpu-2"


def test_files_carry_exact_bytes_and_octal_modes() -> None:
    plan = _plan()
    doc = plan.to_json()
    by_path = {f["path"]: f for f in doc["files"]}
    unit = by_path["/etc/systemd/system/ms4fleet-vllm-0.service"]
    assert unit["content"] == plan.serving.replicas[0].unit_text and unit["mode"] == "0644"
    assert by_path["/usr/local/lib/ms4fleet/weights_verify.py"]["mode"] == "0755"
    assert {f["path"] for f in doc["files"]} >= {f.path for f in plan.provision.files}
    assert [f["path"] for f in doc["merged_files"]] == ["/etc/docker/daemon.json"]


def test_the_service_user_replicas_and_file_triggers_are_in_the_json() -> None:
    doc = _plan(serving={"bind_address": "::1"}).to_json()
    assert doc["service_user"] == {"name": "ms4fleet", "shell": "/usr/sbin/nologin"}
    assert [f["after_change"] for f in doc["files"] if f["kind"] == "nouveau"] == [["/usr/sbin/update-initramfs", "-u"]]
    # The host proxy is reloaded (gracefully, where it runs) after its config changed.
    [reload] = [f["after_change"] for f in doc["files"] if f["kind"] == "proxy"]
    assert reload[:2] == ["/bin/sh", "-c"] and "systemctl reload nginx" in reload[2]
    # The health watch's files: systemd reads its units again and the timer restarts (a reading at once).
    watch = [f["after_change"] for f in doc["files"] if f["kind"] == "health-watch"]
    assert len(watch) == 3 and all(
        "systemctl daemon-reload" in w[2] and "restart ms4fleet-health.timer" in w[2] for w in watch
    )
    assert all(f["after_change"] == [] for f in doc["files"] if f["kind"] not in {"nouveau", "proxy", "health-watch"})
    replica = doc["replicas"][0]
    # vLLM answers on loopback on its internal port whatever the proxy binds (here ::1).
    assert replica["internal_port"] == replica["port"] + 20000 and replica["metrics_port"] == replica["port"] + 10000
    assert (replica["address"], replica["url"]) == ("127.0.0.1", f"http://127.0.0.1:{replica['internal_port']}")
    assert "unit_text" not in replica and isinstance(replica["env"], dict)


def test_without_a_probe_the_plan_says_which_os_it_assumed() -> None:
    doc = _plan().to_json()
    assert doc["os"] == {**DEFAULT_OS.to_json(), "source": "default"}
    probed = host_plan(_config(), OsRelease("ubuntu", "24.04")).to_json()
    assert probed["os"]["source"] == "probe" and "ubuntu2404" in probed["apt"]["url"]


def _write_archive(path: Path, manifest: Any) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        blob = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    path.write_bytes(buffer.getvalue())
    return path


def test_archive_image_id_reads_the_config_digest(tmp_path: Path) -> None:
    one = [{"Config": "69da1c4d.json", "RepoTags": ["vllm/vllm-openai:v0.32.0"], "Layers": []}]
    assert archive_image_id(str(_write_archive(tmp_path / "a.tar", one))) == "sha256:69da1c4d"
    oci = [{"Config": "blobs/sha256/abc123", "RepoTags": [], "Layers": []}]
    assert archive_image_id(str(_write_archive(tmp_path / "b.tar", oci))) == "sha256:abc123"
    (tmp_path / "c.tar").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="not a `docker save` archive"):
        archive_image_id(str(tmp_path / "c.tar"))
    with pytest.raises(ValueError, match="holds 2 images"):
        archive_image_id(str(_write_archive(tmp_path / "d.tar", one + oci)))


def test_image_obtained_by_pull_load_or_not_at_all(tmp_path: Path) -> None:
    assert _plan().image.obtain == "pull"
    archive = _write_archive(tmp_path / "vllm.tar", [{"Config": "69da1c4d.json", "RepoTags": [], "Layers": []}])
    loaded = host_plan(_config(), image_archive=str(archive)).to_json()["image"]
    assert loaded == {
        "ref": "vllm/vllm-openai:v0.32.0",
        "obtain": "load",
        "archive": str(archive),
        "id": "sha256:69da1c4d",
    }
    with pytest.raises(ConfigError, match=r"^gpu-1: image archive"):
        host_plan(_config(), image_archive=str(tmp_path / "missing.tar"))
    native = _plan(runtime={"kind": "native"})
    assert (native.image.ref, native.image.obtain) == (None, "none") and not native.merged_files
