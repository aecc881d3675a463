"""CORS: off unless NIM_CORS_ALLOW_ORIGINS names origins; then Starlette's CORSMiddleware answers
preflights (before the API key check, which a browser's preflight never passes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nimctl.server.app import create_app
from nimctl.server.config import ServerConfig
from nimctl.server.plan import build_plan
from nimctl.server.state import ServerState
from tests.server_process import free_port

ALLOWED = "https://app.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}


def client_for(env: dict[str, str], tmp_path: Path) -> TestClient:
    config = ServerConfig.from_env(
        env, model_path="builtin://tiny-llm", cache_path=tmp_path, engine_port=free_port()
    )
    return TestClient(create_app(ServerState(build_plan(config)), supervise=False))


@pytest.fixture
def cors(tmp_path: Path) -> Iterator[TestClient]:
    env = {
        "NIM_CORS_ALLOW_ORIGINS": f"{ALLOWED}, https://other.example",
        "NIM_CORS_ALLOW_METHODS": "GET,POST",
    }
    with client_for(env, tmp_path) as client:
        yield client


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    with client_for({}, tmp_path) as client:
        response = client.options("/v1/chat/completions", headers={"Origin": ALLOWED, **PREFLIGHT})
        assert response.status_code == 405  # no CORS layer: OPTIONS is just a method the route lacks
        assert response.json()["error"]["code"] == 405
        assert "access-control-allow-origin" not in response.headers
        assert (
            "access-control-allow-origin"
            not in client.get("/v1/health/live", headers={"Origin": ALLOWED}).headers
        )


def test_preflight_from_an_allowed_origin(cors: TestClient) -> None:
    response = cors.options("/v1/chat/completions", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers  # off unless asked for
    simple = cors.get("/v1/health/live", headers={"Origin": ALLOWED})
    assert simple.headers["access-control-allow-origin"] == ALLOWED


def test_preflight_from_another_origin_or_method_is_denied(cors: TestClient) -> None:
    other = cors.options("/v1/chat/completions", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    method = cors.options(
        "/v1/chat/completions", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "DELETE"}
    )
    assert method.status_code == 400
    # Refusals in OpenAI's shape, saying what was refused.
    assert other.json()["error"] == {
        "message": "Disallowed CORS origin",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    assert "method" in method.json()["error"]["message"]
    plain = cors.get("/v1/health/live", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_credentials_when_asked_for(tmp_path: Path) -> None:
    env = {"NIM_CORS_ALLOW_ORIGINS": ALLOWED, "NIM_CORS_ALLOW_CREDENTIALS": "true"}
    with client_for(env, tmp_path) as client:
        response = client.options("/v1/chat/completions", headers={"Origin": ALLOWED, **PREFLIGHT})
        assert response.status_code == 200
        assert response.headers["access-control-allow-credentials"] == "true"


def test_preflight_is_answered_before_the_api_key_check(tmp_path: Path) -> None:
    env = {"NIM_CORS_ALLOW_ORIGINS": ALLOWED, "NIMCTL_API_KEY": "sk-test-key"}
    with client_for(env, tmp_path) as client:
        preflight = client.options("/v1/chat/completions", headers={"Origin": ALLOWED, **PREFLIGHT})
        assert preflight.status_code == 200  # a browser sends no key with a preflight
        refused = client.post("/v1/chat/completions", json={}, headers={"Origin": ALLOWED})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == ALLOWED  # the page can read why
