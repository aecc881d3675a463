"""/openapi.json describes what the server really answers: every error status in OpenAI's shape,
Prometheus text for the metrics, event streams for the relayed routes, and 405 with ``Allow``.

schemathesis checks the same against the live server at scale (tests/server/test_fuzz.py); these
tests name each promise on its own.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nimctl.server.app import create_app
from nimctl.server.config import ServerConfig
from nimctl.server.http_errors import ERROR_SCHEMA, INFERENCE_ERRORS
from nimctl.server.plan import build_plan
from nimctl.server.state import ServerState
from tests.server_process import ServerProcess

RELAYED = ["/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize", "/v1/chat/completions/render"]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    config = ServerConfig.from_env(
        {}, model_path="builtin://tiny-llm", cache_path=tmp_path_factory.mktemp("cache"), engine_port=9
    )
    return create_app(ServerState(build_plan(config)), supervise=False).openapi()


def responses(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return document["paths"][path][method]["responses"]


@pytest.mark.parametrize("path", RELAYED)
def test_inference_routes_document_their_error_statuses(document: dict[str, Any], path: str) -> None:
    documented = responses(document, path, "post")
    for status in (400, 404, 413, 503, *INFERENCE_ERRORS):
        assert documented[str(status)]["content"]["application/json"]["schema"] == ERROR_SCHEMA, status


def test_error_statuses_of_the_other_routes(document: dict[str, Any]) -> None:
    assert {"404", "503"} <= set(responses(document, "/v1/models/{model}", "get"))
    assert {"503"} <= set(responses(document, "/v1/models", "get"))
    assert {"503"} <= set(responses(document, "/v1/health/ready", "get"))
    assert {"404", "503"} <= set(responses(document, "/v1/license", "get"))


def test_metrics_are_documented_as_prometheus_text(document: dict[str, Any]) -> None:
    assert set(responses(document, "/v1/metrics", "get")["200"]["content"]) == {"text/plain"}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_relayed_answers_may_be_event_streams(document: dict[str, Any], path: str) -> None:
    assert {"application/json", "text/event-stream"} <= set(responses(document, path, "post")["200"]["content"])


def test_the_served_document_is_the_apps(nim_server: ServerProcess, document: dict[str, Any]) -> None:
    served = httpx.get(nim_server.url + "/openapi.json", timeout=10).json()
    assert served["paths"].keys() == document["paths"].keys()
    assert set(served["paths"]["/v1/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "DELETE", "PUT", "PATCH"])
@pytest.mark.parametrize(("path", "allowed"), [("/v1/chat/completions", {"POST"}), ("/v1/metrics", {"GET"})])
def test_an_unsupported_method_is_405_with_allow(nim_server: ServerProcess, method: str, path: str, allowed: set[str]) -> None:
    response = httpx.request(method, nim_server.url + path, timeout=10)
    assert response.status_code == 405
    assert {part.strip() for part in response.headers["allow"].split(",")} == allowed
    assert response.json()["error"]["code"] == 405


def test_metrics_answer_is_the_documented_text(nim_server: ServerProcess) -> None:
    response = httpx.get(nim_server.url + "/v1/metrics", timeout=10)
    assert response.headers["content-type"].startswith("text/plain")
