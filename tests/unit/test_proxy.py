"""The host proxy and the load balancer's shared parts (``ms4fleet.proxy``): vLLM on loopback, only the API
and /health on the public port, /metrics only to allowed networks, the derived ports validated, and the
load balancer's TLS settings and key check."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.hostplan import host_plan
from ms4fleet.proxy import PROXY_CONF, host_proxy_conf
from ms4fleet.rollout import lb


def host(**serving: Any) -> HostConfig:
    return HostConfig.from_host_data(
        "gpu-1",
        {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 2}, "ms4fleet_serving": {"tensor_parallel_size": 1, **serving}},
    )


def servers(text: str) -> list[str]:
    return re.findall(r"^server \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL)


def test_vllm_binds_loopback_on_its_internal_port_and_the_proxy_the_public_one() -> None:
    plan = host_plan(host(bind_address="0.0.0.0"))
    replica = plan.replicas[1]
    argv = list(replica.argv)
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "28001"
    assert (replica.port, replica.metrics_port, replica.internal_port) == (8001, 18001, 28001)
    text = plan.file(PROXY_CONF).content
    api, metrics = servers(text)[2:4]
    assert "listen 0.0.0.0:8001;" in api and "listen 0.0.0.0:18001;" in metrics
    # The API server: /v1/ and /health to vLLM, everything else 404; no allow/deny (the key guards /v1).
    assert re.findall(r"location ([^{]+) \{", api) == ["/v1/", "= /health", "/"]
    assert api.count("proxy_pass http://127.0.0.1:28001;") == 2 and "return 404;" in api
    # The metrics server: /metrics only, loopback always, everyone else 403.
    assert re.findall(r"location ([^{]+) \{", metrics) == ["= /metrics", "/"]
    assert "allow 127.0.0.0/8;\n        allow ::1/128;\n        deny all;" in metrics
    assert "api_key" not in text.lower() and "authorization" not in text.lower()


def test_the_proxy_config_does_not_change_with_the_gpus_the_health_check_excludes() -> None:
    config = host(bind_address="::", metrics_allow=["10.0.5.0/24", "fd00::/8"])
    text = host_proxy_conf(config, [8000, 8001])
    assert "listen [::]:8000;" in text and "listen [::]:18001;" in text
    assert "        allow 10.0.5.0/24;\n        allow fd00::/8;\n        deny all;" in text
    assert host_plan(config).file(PROXY_CONF).content == text


@pytest.mark.parametrize(
    ("serving", "field", "message"),
    [
        ({"metrics_allow": ["10.0.0.5/8"]}, "serving.metrics_allow[0]", "host bits"),
        ({"metrics_allow": ["10.0.0.0/8; allow all"]}, "serving.metrics_allow[0]", "CIDR"),
        ({"metrics_allow": ["fd00:0::/8"]}, "serving.metrics_allow[0]", "write 'fd00::/8'"),
        ({"port": 45535}, "serving.port", "use a port of at most 45534"),
        (
            {"tensor_parallel_size": None, "replicas": [{"gpus": [0], "port": 8000}, {"gpus": [1], "port": 18000}]},
            "serving.replicas[0].port",
            "another replica already uses",
        ),
        (
            {"tensor_parallel_size": None, "replicas": [{"gpus": [0], "port": 8000}, {"gpus": [1], "port": 50000}]},
            "serving.replicas[1].port",
            "past 65535",
        ),
    ],
)
def test_bad_ports_and_networks_are_one_line_naming_the_field(
    serving: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        host(**serving)
    assert err.value.field == field and message in str(err.value) and "\n" not in str(err.value)


def test_the_load_balancer_passes_the_same_routes_and_listens_with_tls_only_when_configured() -> None:
    backends = [lb.Backend("gpu-1", "10.0.0.1", 8000)]
    plain = lb.nginx_conf(backends)
    assert "listen 8080;" in plain and "ssl" not in plain
    assert re.findall(r"location ([^{]+) \{", plain) == ["/v1/", "= /health", "/"]
    settings = lb.settings_from_data("lb-1", {"lb_tls_certificate": "/etc/ssl/lb.crt", "lb_tls_key": "/etc/ssl/lb.key"})
    tls = lb.nginx_conf(backends, settings=settings)
    assert "listen 443 ssl;" in tls and "listen 8080" not in tls
    assert "ssl_certificate /etc/ssl/lb.crt;" in tls and "ssl_certificate_key /etc/ssl/lb.key;" in tls
    # The drain and route code reads the upstream lines back unchanged.
    assert lb.routed(tls) == lb.routed(plain) == lb.Routed(frozenset({"gpu-1"}), frozenset())


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"lb_tls_certificate": "/etc/ssl/lb.crt"}, "lb_tls_key"),
        ({"lb_tls_key": "/etc/ssl/lb.key"}, "lb_tls_certificate"),
        ({"lb_tls_certificate": "etc/lb.crt", "lb_tls_key": "/etc/ssl/lb.key"}, "lb_tls_certificate"),
        ({"lb_tls_certificate": "/etc/ssl/lb.crt;\nlisten 80", "lb_tls_key": "/k"}, "lb_tls_certificate"),
        ({"lb_tls_port": "443"}, "lb_tls_port"),
        ({"lb_tls_port": 70000}, "lb_tls_port"),
    ],
)
def test_bad_tls_settings_are_refused_naming_the_key(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        lb.settings_from_data("lb-1", data)
    assert err.value.field == field and "\n" not in str(err.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="the check wants the key owned by uid 0")
@pytest.mark.parametrize(("mode", "ok"), [(0o600, True), (0o400, True), (0o640, False), (0o644, False)])
def test_the_key_check_refuses_a_key_others_can_read(tmp_path: Path, mode: int, ok: bool) -> None:
    key = tmp_path / "lb.key"
    key.write_text("not a real key\n")
    key.chmod(mode)
    settings = lb.LbSettings(tls_certificate="/etc/ssl/lb.crt", tls_key=str(key))
    done = subprocess.run(["sh", "-c", lb.key_check_script(settings)], capture_output=True, text=True, check=False)
    assert (done.returncode == 0) == ok, done.stderr
    if not ok:
        assert f"{key} is uid 0 mode {mode:o}: chown root:root and chmod 0600 it" in done.stderr
        assert "not a real key" not in done.stderr
