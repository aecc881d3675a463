"""The lean inference path (nimctl/server/lean_relay.py) answers as the framework path does.

Each case sends the same request to a front built with NIMCTL_FRONT_DATA_PATH=lean (the default)
and to one built with =framework, both before the stand-in engine of tests/server/test_front.py,
and compares status, body and the headers a client acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nimctl.server.app import create_app
from nimctl.server.config import ServerConfig
from nimctl.server.plan import build_plan
from nimctl.server.runner import uvicorn_config
from nimctl.server.state import Phase, ServerState
from tests.server.test_front import ODD_ANSWERS, engine_port  # noqa: F401  (engine_port: a fixture)

KEY = "lean-test-key"
CHAT = {"model": "tiny-llm", "messages": [{"role": "user", "content": "hi"}]}
ACTED_ON = ("content-type", "www-authenticate", "retry-after", "connection", "access-control-allow-origin")


def _front(tmp_path: Path, port: int, data_path: str, **overrides: Any) -> tuple[TestClient, ServerState]:
    environ = {"NIMCTL_FRONT_DATA_PATH": data_path, "NIMCTL_API_KEY": KEY}
    config = ServerConfig.from_env(
        environ,
        model_path="builtin://tiny-llm",
        cache_path=tmp_path / data_path,
        engine_port=port,
        **overrides,
    )
    state = ServerState(build_plan(config))
    state.set_phase(Phase.ready)
    app = create_app(state, supervise=False)
    assert (app.lean is not None) == (data_path == "lean")
    return TestClient(app, raise_server_exceptions=False), state


@pytest.fixture
def fronts(tmp_path: Path, engine_port: int) -> Iterator[Callable[..., list[tuple[TestClient, ServerState]]]]:  # noqa: F811
    opened: list[TestClient] = []

    def build(**overrides: Any) -> list[tuple[TestClient, ServerState]]:
        pair = [_front(tmp_path, engine_port, path, **overrides) for path in ("lean", "framework")]
        for client, _ in pair:
            client.__enter__()
            opened.append(client)
        return pair

    yield build
    for client in opened:
        client.__exit__(None, None, None)


def _answer(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body, {k: response.headers[k] for k in ACTED_ON if k in response.headers}


def _same(pair: list[tuple[TestClient, ServerState]], method: str, path: str, **kwargs: Any) -> Any:
    lean, framework = (_answer(client.request(method, path, **kwargs)) for client, _ in pair)
    assert lean == framework
    return lean


AUTH = {"authorization": f"Bearer {KEY}"}


def test_answers_match_the_framework_path(fronts: Callable[..., list[Any]]) -> None:
    pair = fronts()
    status, body, _ = _same(pair, "POST", "/v1/chat/completions", json=CHAT, headers=AUTH)
    assert status == 200 and body["auth"] == AUTH["authorization"]  # headers reach the engine
    assert _same(pair, "POST", "/v1/chat/completions", json=CHAT)[0] == 401
    # Two Authorization headers: both paths read the first.
    two = [("authorization", "Bearer no"), ("authorization", AUTH["authorization"])]
    assert _same(pair, "POST", "/v1/chat/completions", json=CHAT, headers=two)[0] == 401
    assert (
        _same(pair, "POST", "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer no"})[0]
        == 401
    )
    assert _same(pair, "POST", "/v1/chat/completions", content=b"\xff\xfe", headers=AUTH)[0] == 400
    assert _same(pair, "POST", "/v1/chat/completions", content=b"{", headers=AUTH)[0] == 400
    assert _same(pair, "POST", "/v1/completions?x=1", json={"prompt": "hi"}, headers=AUTH)[0] == 404
    big = {**AUTH, "x-padding": "p" * 20_000}
    assert _same(pair, "POST", "/v1/chat/completions", json=CHAT, headers=big)[0] == 431
    for _, state in pair:
        state.set_phase(Phase.loading)
    assert _same(pair, "POST", "/v1/chat/completions", json=CHAT, headers=AUTH)[0] == 503
    for _, state in pair:
        state.set_phase(Phase.ready)
        state.draining = True
    assert _same(pair, "POST", "/v1/chat/completions", json=CHAT, headers=AUTH)[0] == 503


def test_streams_match_the_framework_path(fronts: Callable[..., list[Any]]) -> None:
    lines = []
    for client, _ in fronts():
        with client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines.append(list(response.iter_lines()))
    assert lines[0] == lines[1] == ['data: {"x": 1}', "", "data: [DONE]", ""]


def test_the_body_limit_and_cors_match_the_framework_path(fronts: Callable[..., list[Any]]) -> None:
    pair = fronts(max_body_bytes=1024, cors_allow_origins=["https://app.example"])
    assert _same(pair, "POST", "/v1/chat/completions", content=b"x" * 4096, headers=AUTH)[0] == 413
    for _, state in pair:
        state.set_phase(Phase.loading)
    # Not ready: refused before the body is read, so a body over the limit is not what is answered.
    assert _same(pair, "POST", "/v1/chat/completions", content=iter([b"x" * 4096]), headers=AUTH)[0] == 503
    for _, state in pair:
        state.set_phase(Phase.ready)
    origin = {**AUTH, "origin": "https://app.example"}
    _, _, headers = _same(pair, "POST", "/v1/chat/completions", json=CHAT, headers=origin)
    assert headers["access-control-allow-origin"] == "https://app.example"


def test_the_lean_path_counts_its_requests_in_the_metrics(fronts: Callable[..., list[Any]]) -> None:
    for client, _ in fronts():
        client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        text = client.get("/v1/metrics", headers=AUTH).text
        counted = {
            (s.labels["route"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(text)
            if family.name == "nimctl_http_requests"
            for s in family.samples
            if s.name.endswith("_total")
        }
        assert counted[("/v1/chat/completions", "200")] == 1


def test_uvloop_and_httptools_are_named_not_left_to_auto(tmp_path: Path) -> None:
    config = ServerConfig.from_env({}, model_path="builtin://tiny-llm", cache_path=tmp_path)
    uv_config = uvicorn_config(create_app(ServerState(build_plan(config)), supervise=False), config)
    assert (uv_config.loop, uv_config.http) == ("uvloop", "httptools")
    uv_config.load()
    assert uv_config.http_protocol_class is HttpToolsProtocol
    assert isinstance(uv_config, uvicorn.Config)


def test_an_engine_5xx_stream_is_judged_as_a_whole(fronts: Callable[..., list[Any]]) -> None:
    ODD_ANSWERS["/v1/chat/completions"] = (500, b"data: {}\n\n", "text/event-stream")
    try:
        status, body, _ = _same(fronts(), "POST", "/v1/chat/completions", json=CHAT, headers=AUTH)
    finally:
        ODD_ANSWERS.clear()
    assert status == 502 and body["error"]["code"] == 502


def test_a_client_gone_before_its_body_is_counted_as_499_on_both_paths(
    fronts: Callable[..., list[Any]],
) -> None:
    """Nobody to answer: no 500, no traceback, a 499 in the metrics (nginx's "client closed")."""
    headers = [(b"authorization", AUTH["authorization"].encode()), (b"content-type", b"application/json")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def sent(message: dict[str, Any]) -> None:
        pass

    for client, _ in fronts():
        client.portal.call(client.app, dict(scope), gone, sent)
        text = client.get("/v1/metrics", headers=AUTH).text
        statuses = {
            s.labels["status"]: s.value
            for family in text_string_to_metric_families(text)
            if family.name == "nimctl_http_requests"
            for s in family.samples
            if s.name.endswith("_total") and s.labels["route"] == "/v1/chat/completions"
        }
        assert statuses == {"499": 1}
