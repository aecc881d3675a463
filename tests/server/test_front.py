"""Unit tests of the front's own logic, with a small stand-in HTTP server for the engine.

The real behaviour (the real engine behind the front) is proven in tests/server/.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nimctl.server import management
from nimctl.server.app import create_app
from nimctl.server.config import ServerConfig
from nimctl.server.plan import build_plan
from nimctl.server.state import Phase, ServerState
from tests.server_process import free_port

MODELS = {"object": "list", "data": [{"id": "tiny-llm", "object": "model", "max_model_len": 2048}]}
# path -> (status, body, media type): an odd answer the next requests to that path get instead.
ODD_ANSWERS: dict[str, tuple[int, bytes, str]] = {}


async def fake_engine(request: Request) -> Response:
    """A small stand-in for vLLM's HTTP server: just the answers these tests look at."""
    path = request.url.path
    if path in ODD_ANSWERS:
        status, content, media_type = ODD_ANSWERS[path]
        return Response(content, status_code=status, media_type=media_type)
    if path == "/v1/models":
        return JSONResponse(MODELS)
    if path == "/v1/chat/completions":
        body = json.loads(await request.body())
        if body.get("stream"):

            async def frames() -> AsyncIterator[bytes]:
                yield b'data: {"x": 1}\n\n'
                yield b"data: [DONE]\n\n"

            return StreamingResponse(frames(), media_type="text/event-stream")
        return JSONResponse({"echo": body, "auth": request.headers.get("authorization")})
    if path == "/v1/chat/completions/render":
        return JSONResponse({"token_ids": [5, 6, 7], "request_id": "r1"})
    if path == "/detokenize":
        return JSONResponse({"prompt": "<user>hello"})
    return JSONResponse({"detail": "Not Found"}, status_code=404)


@pytest.fixture(scope="module")
def engine_port() -> Iterator[int]:
    app = Starlette(routes=[Route("/{path:path}", fake_engine, methods=["GET", "POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield port
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def state(tmp_path: Path, engine_port: int) -> ServerState:
    config = ServerConfig.from_env(
        {}, model_path="builtin://tiny-llm", cache_path=tmp_path, engine_port=engine_port
    )
    return ServerState(build_plan(config))


@pytest.fixture
def client(state: ServerState) -> Iterator[TestClient]:
    with TestClient(create_app(state, supervise=False)) as test_client:
        yield test_client


@pytest.fixture
def odd_engine() -> Iterator[dict[str, tuple[int, bytes, str]]]:
    yield ODD_ANSWERS
    ODD_ANSWERS.clear()


def test_inference_is_503_in_openai_shape_until_ready(client: TestClient, state: ServerState) -> None:
    state.set_phase(Phase.loading)
    response = client.post("/v1/chat/completions", json={"model": "tiny-llm", "messages": []})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == 503
    assert "loading" in response.json()["error"]["message"]
    assert client.get("/v1/health/live").status_code == 200
    assert client.get("/v1/health/ready").status_code == 503


def test_relays_body_and_headers_when_ready(client: TestClient, state: ServerState) -> None:
    state.set_phase(Phase.ready)
    response = client.post(
        "/v1/chat/completions",
        json={"model": "tiny-llm", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": "Bearer k"},
    )
    assert response.status_code == 200
    assert response.json()["echo"]["messages"][0]["content"] == "hi"
    assert response.json()["auth"] == "Bearer k"


def test_relays_event_streams(client: TestClient, state: ServerState) -> None:
    state.set_phase(Phase.ready)
    with client.stream("POST", "/v1/chat/completions", json={"model": "m", "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert list(response.iter_lines()) == ['data: {"x": 1}', "", "data: [DONE]", ""]


def test_render_adds_the_prompt_text(client: TestClient, state: ServerState) -> None:
    state.set_phase(Phase.ready)
    body = client.post("/v1/chat/completions/render", json={"messages": []}).json()
    assert body == {"prompt": "<user>hello", "token_ids": [5, 6, 7], "request_id": "r1"}


def test_models_retrieve_from_the_engines_list(client: TestClient, state: ServerState) -> None:
    state.set_phase(Phase.ready)
    assert client.get("/v1/models/tiny-llm").json()["id"] == "tiny-llm"
    assert client.get("/v1/models/other").status_code == 404


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}
                    ]
                }
            ).encode(),
            "data:image/png;base64",
        ),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a": ' * 100_000, "nested too deeply"),
    ],
)
def test_bad_bodies_are_400(client: TestClient, state: ServerState, body: bytes, fragment: str) -> None:
    state.set_phase(Phase.ready)
    response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def test_unknown_path_and_method(client: TestClient) -> None:
    assert client.get("/nope").json()["error"]["code"] == 404
    assert client.delete("/v1/models").json()["error"]["code"] == 405


@pytest.mark.parametrize("path", ["/v1/health/live/", "/v1/metadata/", "/v1/metrics/", "/docs/"])
def test_a_trailing_slash_is_not_a_configured_path(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == 404


def test_a_bug_is_a_json_500_in_openai_shape_and_logged(
    state: ServerState, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(management, "_license", broken)
    with TestClient(create_app(state, supervise=False), raise_server_exceptions=False) as test_client:
        response = test_client.get("/v1/license")
        assert test_client.get("/v1/health/live").status_code == 200  # the front carries on
    assert response.status_code == 500
    assert response.json()["error"]["code"] == 500
    assert response.json()["error"]["type"] == "InternalServerError"
    logged = [r for r in caplog.records if r.exc_info and "GET /v1/license" in r.getMessage()]
    assert logged and "a bug" in str(logged[0].exc_info[1])


@pytest.mark.parametrize(
    ("path", "answer", "status"),
    [
        ("/v1/chat/completions/render", (400, b"oops, not JSON", "text/plain"), 502),
        ("/v1/chat/completions/render", (404, b'{"detail": "Not Found"}', "application/json"), 502),
        ("/v1/chat/completions/render", (200, b"[1, 2, 3]", "application/json"), 502),
        ("/v1/chat/completions/render", (200, b'{"request_id": "r1"}', "application/json"), 502),
        ("/v1/chat/completions/render", (200, b"not JSON", "text/plain"), 502),
        ("/detokenize", (200, b'{"tokens": []}', "application/json"), 502),
        ("/detokenize", (500, b"Internal Server Error", "text/plain"), 502),
    ],
)
def test_render_turns_odd_engine_answers_into_502(
    client: TestClient,
    state: ServerState,
    odd_engine: dict[str, tuple[int, bytes, str]],
    path: str,
    answer: tuple[int, bytes, str],
    status: int,
) -> None:
    state.set_phase(Phase.ready)
    odd_engine[path] = answer
    response = client.post("/v1/chat/completions/render", json={"messages": []})
    assert response.status_code == status
    assert {"message", "type", "param", "code"} <= set(response.json()["error"])


def test_render_passes_an_engine_error_in_openai_shape_through(
    client: TestClient, state: ServerState, odd_engine: dict[str, tuple[int, bytes, str]]
) -> None:
    state.set_phase(Phase.ready)
    error = {"error": {"message": "bad messages", "type": "BadRequestError", "param": None, "code": 400}}
    odd_engine["/v1/chat/completions/render"] = (400, json.dumps(error).encode(), "application/json")
    response = client.post("/v1/chat/completions/render", json={"messages": []})
    assert response.status_code == 400
    assert response.json() == error


def test_render_keeps_its_own_prompt_field(
    client: TestClient, state: ServerState, odd_engine: dict[str, tuple[int, bytes, str]]
) -> None:
    state.set_phase(Phase.ready)
    rendered = {"prompt": "the engine's", "token_ids": [5, 6, 7]}
    odd_engine["/v1/chat/completions/render"] = (200, json.dumps(rendered).encode(), "application/json")
    body = client.post("/v1/chat/completions/render", json={"messages": []}).json()
    assert body == {"prompt": "<user>hello", "token_ids": [5, 6, 7]}


def test_models_retrieve_with_an_unreadable_engine_list_is_502(
    client: TestClient, state: ServerState, odd_engine: dict[str, tuple[int, bytes, str]]
) -> None:
    state.set_phase(Phase.ready)
    odd_engine["/v1/models"] = (200, b'{"data": "nope"}', "application/json")
    assert client.get("/v1/models/tiny-llm").status_code == 502


def test_draining_refuses_new_work_but_answers_health(client: TestClient, state: ServerState) -> None:
    state.set_phase(Phase.ready)
    state.draining = True
    assert client.post("/v1/chat/completions", json={}).status_code == 503
    assert client.get("/v1/health/live").status_code == 200
    assert client.get("/v1/health/ready").status_code == 503


def test_metrics_without_engine_is_valid_and_counts_requests(client: TestClient, state: ServerState) -> None:
    client.get("/v1/health/live")
    client.get("/no/such/path")
    text = client.get("/v1/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["nimctl_ready"].samples[0].value == 0
    routes = {
        s.labels["route"] for s in families["nimctl_http_requests"].samples if s.name.endswith("_total")
    }
    assert {"/v1/health/live", "unmatched"} <= routes
    states = {s.labels["state"]: s.value for s in families["nimctl_engine_state"].samples}
    assert states[state.phase.value] == 1


@pytest.fixture
def client_without_engine(tmp_path: Path) -> Iterator[tuple[TestClient, ServerState]]:
    config = ServerConfig.from_env(
        {}, model_path="builtin://tiny-llm", cache_path=tmp_path, engine_port=free_port()
    )
    state = ServerState(build_plan(config))
    state.set_phase(Phase.ready)  # as if the engine died a moment after the last health check
    with TestClient(create_app(state, supervise=False)) as test_client:
        yield test_client, state


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat/completions", {"model": "m", "messages": []}),
        ("POST", "/v1/chat/completions/render", {"messages": []}),
        ("GET", "/v1/models/tiny-llm", None),
        ("GET", "/v1/models", None),
    ],
)
def test_engine_gone_is_503_not_500(
    client_without_engine: tuple[TestClient, ServerState], method: str, path: str, body: object
) -> None:
    client, _ = client_without_engine
    response = client.request(method, path, json=body)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == 503


def test_before_the_engine_has_a_port_relays_are_503(tmp_path: Path) -> None:
    config = ServerConfig.from_env({}, model_path="builtin://tiny-llm", cache_path=tmp_path)
    state = ServerState(build_plan(config, environ={}))
    assert state.engine_url is None  # the port is chosen at launch
    state.set_phase(Phase.ready)
    with TestClient(create_app(state, supervise=False)) as test_client:
        response = test_client.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert response.status_code == 503
        assert test_client.get("/v1/metrics").status_code == 200


APACHE_URL = "https://www.apache.org/licenses/LICENSE-2.0"  # what profiles/tiny-llm.yaml names


def test_without_a_license_file_the_manifests_license_is_reported(client: TestClient) -> None:
    response = client.get("/v1/license")
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "LICENSE*" in message and "builtin/tiny-llm" in message  # what was looked for, and where
    assert f"names the license Apache-2.0 at {APACHE_URL}" in message
    assert "text is not available" in message
    info = client.get("/v1/metadata").json()["licenseInfo"]
    assert info == {
        "name": "Apache-2.0",
        "path": None,
        "sha": None,
        "size": None,
        "url": APACHE_URL,
        "type": "manifest",
    }


def test_a_license_file_in_the_model_folder_wins(client: TestClient, state: ServerState, tmp_path: Path) -> None:
    folder = tmp_path / "fetched"
    folder.mkdir()
    (folder / "LICENSE.txt").write_text("Apache License 2.0 text\n")
    state.model_dir = folder
    body = client.get("/v1/license").json()
    assert (body["name"], body["type"], body["url"]) == ("LICENSE.txt", "file", APACHE_URL)
    assert body["content"] == "Apache License 2.0 text\n"
    info = client.get("/v1/metadata").json()["licenseInfo"]
    assert info == {key: value for key, value in body.items() if key != "content"}


def test_no_license_anywhere(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    config = ServerConfig.from_env({}, model_path=str(tmp_path), cache_path=tmp_path, engine_port=free_port())
    with TestClient(create_app(ServerState(build_plan(config, environ={})), supervise=False)) as test_client:
        response = test_client.get("/v1/license")
        assert response.status_code == 404
        assert "manifest" not in response.json()["error"]["message"]
        assert test_client.get("/v1/metadata").json()["licenseInfo"] is None
