"""NIM's management endpoints on the real server (front + vLLM CPU engine, tiny VLM)."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from nimctl import API_VERSION, __version__
from nimctl.engine_flags import masked
from tests.server_process import ServerProcess


def get(server: ServerProcess, path: str) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30)


def test_live_answered_before_ready_then_ready_without_restart(nim_server: ServerProcess) -> None:
    if nim_server.process is None:
        pytest.skip("server started outside the tests: its start-up was not observed")
    assert (200, 503) in nim_server.observed, nim_server.observed
    assert nim_server.observed[-1] == (200, 200)
    first_live = nim_server.observed.index((200, 503))
    assert all(live == 200 for live, _ in nim_server.observed[first_live:])


def test_live(nim_server: ServerProcess) -> None:
    response = get(nim_server, "/v1/health/live")
    assert response.status_code == 200
    assert response.json() == {"object": "health.response", "message": "service is live", "status": "live"}


def test_ready(nim_server: ServerProcess) -> None:
    response = get(nim_server, "/v1/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "health.response"
    assert body["status"] == "ready"
    assert body["message"]


def test_version(nim_server: ServerProcess) -> None:
    assert get(nim_server, "/v1/version").json() == {"release": __version__, "api": API_VERSION}


def test_license_is_the_model_folders_file(nim_server: ServerProcess) -> None:
    body = get(nim_server, "/v1/license").json()
    assert body["type"] == "file"
    assert body["name"].upper().startswith("LICENSE")
    content = body["content"].encode()
    assert body["size"] == len(content)
    assert body["sha"] == hashlib.sha1(content).hexdigest()
    assert body["path"].endswith(body["name"])
    assert "url" in body


def test_metadata(nim_server: ServerProcess) -> None:
    body = get(nim_server, "/v1/metadata").json()
    assert body["version"] == __version__
    assert body["modelInfo"] == [
        {"shortName": "tiny-vlm", "modelUrl": "builtin://tiny-vlm", "maxModelLen": body["modelInfo"][0]["maxModelLen"]}
    ]
    assert isinstance(body["modelInfo"][0]["maxModelLen"], int)
    assert "config.json" in body["assetInfo"]
    assert "content" not in body["licenseInfo"]
    assert body["licenseInfo"]["type"] == "file"
    assert len(body["profile_id"]) == 64
    assert body["profile_name"]
    assert body["repository_override"] is None
    # The engine's arguments as planned: the profile's and the front's own.
    assert "--enable-scale-out" in body["engineArgs"]


def test_engine_args_mask_credentials() -> None:
    args = ["--api-key", "s3cret", "--hf-token=abc", "--max-model-len", "512", "--ssl-keyfile", "/k.pem"]
    assert masked(args) == ["--api-key", "***", "--hf-token=***", "--max-model-len", "512", "--ssl-keyfile", "/k.pem"]


def test_manifest(nim_server: ServerProcess) -> None:
    body = get(nim_server, "/v1/manifest").json()
    parsed = yaml.safe_load(body["manifest_file"])
    assert parsed  # the YAML text of the manifest file, as shipped
    assert body["repository_override"] is None
    metadata = get(nim_server, "/v1/metadata").json()
    assert metadata["profile_id"] in [profile["id"] for profile in body["profiles"]]


def test_metrics_is_one_valid_document_with_engine_and_front_metrics(nim_server: ServerProcess) -> None:
    httpx.post(
        nim_server.url + "/v1/chat/completions",
        json={"model": "tiny-vlm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        timeout=60,
    )
    response = get(nim_server, "/v1/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))
    names = [family.name for family in families]
    assert len(names) == len(set(names)), "duplicate metric families"
    assert any(name.startswith("vllm:") for name in names)
    samples = {s.name: s for family in families for s in family.samples}
    assert samples["nimctl_ready"].value == 1.0
    assert "nimctl_http_requests_in_flight" in samples
    assert "nimctl_engine_starts_total" in samples
    chat = [
        s
        for family in families
        if family.name == "nimctl_http_requests"
        for s in family.samples
        if s.labels.get("route") == "/v1/chat/completions" and s.name.endswith("_total")
    ]
    assert any(sample.labels["status"] == "200" and sample.value >= 1 for sample in chat)
    assert any(name == "nimctl_http_request_duration_seconds" for name in names)


def test_unknown_path_is_404_in_openai_shape(nim_server: ServerProcess) -> None:
    for method, path in [("GET", "/v1/nope"), ("GET", "/metrics"), ("POST", "/v1/messages"), ("GET", "/health")]:
        response = httpx.request(method, nim_server.url + path, timeout=10)
        assert response.status_code == 404, path
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == 404


def test_openapi_describes_management_and_inference(nim_server: ServerProcess) -> None:
    paths = get(nim_server, "/openapi.json").json()["paths"]
    for path in [
        "/v1/health/live",
        "/v1/health/ready",
        "/v1/metadata",
        "/v1/version",
        "/v1/license",
        "/v1/manifest",
        "/v1/metrics",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/tokenize",
        "/detokenize",
        "/v1/chat/completions/render",
    ]:
        assert path in paths, path
    assert get(nim_server, "/docs").status_code == 200
