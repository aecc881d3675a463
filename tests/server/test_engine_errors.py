"""The second line of defence: the engine's 5xx answers judged by the front.

A 500 whose message shows the client's input as the cause is a 400; the one vLLM calls retryable is
sent again once; any other is a 502 carrying the engine's message. Checked with a small stand-in for
the engine (the real engine's answers are in test_bad_input.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nimctl.server.app import create_app
from nimctl.server.config import ServerConfig
from nimctl.server.engine_errors import judge_engine_error
from nimctl.server.plan import build_plan
from nimctl.server.request_checks import CheckedBody
from nimctl.server.state import Phase, ServerState
from tests.server_process import free_port

# The messages the stand-in engine answers the next chat requests with, as 500s; then 200.
ENGINE_500S: list[str] = []
CHAT_CALLS: list[bytes] = []


async def stand_in_engine(request: Request) -> Response:
    if request.url.path == "/v1/chat/completions":
        CHAT_CALLS.append(await request.body())
        if ENGINE_500S:
            return JSONResponse(engine_answer(ENGINE_500S.pop(0)), status_code=500)
    return JSONResponse({"object": "chat.completion", "choices": []})


@pytest.fixture(scope="module")
def engine_port() -> Iterator[int]:
    app = Starlette(routes=[Route("/{path:path}", stand_in_engine, methods=["GET", "POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)  # uvicorn's own start flag, polled: there is no event to wait on
    yield port
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def client(tmp_path: Path, engine_port: int) -> Iterator[TestClient]:
    config = ServerConfig.from_env({}, model_path="builtin://tiny-llm", cache_path=tmp_path, engine_port=engine_port)
    state = ServerState(build_plan(config))
    with TestClient(create_app(state, supervise=False)) as test_client:
        state.set_phase(Phase.ready)
        ENGINE_500S.clear()
        CHAT_CALLS.clear()
        yield test_client


def chat(client: TestClient) -> tuple[int, str]:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    response = client.post("/v1/chat/completions", json=body)
    return response.status_code, response.json().get("error", {}).get("message", "")


def test_the_retryable_engine_500_is_sent_again_once(client: TestClient) -> None:
    ENGINE_500S.append("Internal server error")
    assert chat(client) == (200, "")
    assert len(CHAT_CALLS) == 2 and CHAT_CALLS[0] == CHAT_CALLS[1]


def test_a_retryable_500_twice_is_a_502(client: TestClient) -> None:
    ENGINE_500S.extend(["Internal server error"] * 2)
    status, message = chat(client)
    assert (status, len(CHAT_CALLS)) == (502, 2)
    assert "Internal server error" in message


def test_through_the_front_an_engine_500_is_a_400_or_a_502(client: TestClient) -> None:
    ENGINE_500S.extend(["'int' object has no attribute 'get'", "RuntimeError: CUDA error"])
    assert chat(client)[0] == 400
    assert chat(client) == (502, "the engine failed on this request: RuntimeError: CUDA error")
    assert len(CHAT_CALLS) == 2  # neither was sent again



def engine_answer(message: str) -> dict[str, object]:
    return {"error": {"message": message, "type": "InternalServerError", "param": None, "code": 500}}


REMOTE = CheckedBody({}, remote_urls=["http://127.0.0.1:9/cat.png"])


@pytest.mark.parametrize(
    ("message", "checked", "status", "fragment"),
    [
        ("", REMOTE, 400, "http://127.0.0.1:9/cat.png could not be fetched: no answer in time"),
        ("Cannot connect to host 127.0.0.1:9 ssl:default", REMOTE, 400, "could not be fetched"),
        ("500, message='Internal Server Error', url='http://127.0.0.1:9/cat.png'", REMOTE, 400, "could not be fetched"),
        ("Cannot load local files without `--allowed-local-media-path`.", CheckedBody({}), 400, "not local files"),
        ("Image size (900000000 pixels) exceeds limit of 178956970 pixels, could be decompression bomb DOS attack.", CheckedBody({}), 400, "too large"),
        ("'int' object has no attribute 'get'", CheckedBody({}), 400, "wrong JSON type"),
        ("Failed to apply prompt replacement for mm_items['image'][0]", CheckedBody({}), 400, "chat template"),
        # Not the client's fault: the engine's failure, a 502 that carries its message.
        ("", CheckedBody({}), 502, "no message"),
        ("CUDA error: an illegal memory access was encountered", REMOTE, 502, "illegal memory access"),
    ],
)
def test_engine_500s_are_judged(message: str, checked: CheckedBody, status: int, fragment: str) -> None:
    response = judge_engine_error(500, engine_answer(message), checked)
    assert response is not None and response.status_code == status
    assert fragment in json.loads(bytes(response.body))["error"]["message"]


def test_other_engine_5xx_and_4xx_pass_on() -> None:
    assert judge_engine_error(503, engine_answer("overloaded"), CheckedBody({})) is None
    assert judge_engine_error(422, engine_answer("Failed to fetch media"), REMOTE) is None
