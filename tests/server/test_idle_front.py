"""What counts as use for the idle stop, through the real front (uvicorn, both data paths) before a
stand-in engine whose streams last until the test lets them end; and the gauges on /v1/metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nimctl import contract
from nimctl.server.app import create_app
from nimctl.server.config import ServerConfig
from nimctl.server.plan import build_plan
from nimctl.server.runner import uvicorn_config
from nimctl.server.state import Phase, ServerState
from tests.server_process import free_port

RELEASE = threading.Event()  # a stream in the stand-in engine lasts until this is set
CHAT = {"model": "tiny-llm", "messages": [{"role": "user", "content": "hi"}]}


async def _engine(request: Request) -> Response:
    if request.url.path == "/v1/models":
        return JSONResponse({"object": "list", "data": [{"id": "tiny-llm", "object": "model"}]})
    if request.url.path == "/v1/chat/completions":

        async def frames() -> AsyncIterator[bytes]:
            yield b'data: {"x": 1}\n\n'
            while not RELEASE.is_set():
                await asyncio.sleep(0.01)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")
    return JSONResponse({"tokens": [1]})  # /tokenize and the rest


def _serve(
    app: object, port: int, config: uvicorn.Config | None = None
) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(config or uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    return server, thread


@pytest.fixture(scope="module")
def engine_port() -> Iterator[int]:
    port = free_port()
    server, thread = _serve(Starlette(routes=[Route("/{path:path}", _engine, methods=["GET", "POST"])]), port)
    yield port
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def front(tmp_path: Path, engine_port: int) -> Iterator[Callable[..., tuple[str, ServerState]]]:
    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def build(data_path: str, **env: str) -> tuple[str, ServerState]:
        environ = {contract.FRONT_DATA_PATH: data_path, **env}
        config = ServerConfig.from_env(
            environ,
            model_path="builtin://tiny-llm",
            cache_path=tmp_path,
            engine_port=engine_port,
            server_port=free_port(),
        )
        state = ServerState(build_plan(config))
        state.set_phase(Phase.ready)
        app = create_app(state, supervise=False)
        started.append(_serve(app, config.server_port, uvicorn_config(app, config)))
        return f"http://127.0.0.1:{config.server_port}", state

    RELEASE.clear()
    yield build
    RELEASE.set()
    for server, thread in started:
        server.should_exit = True
        thread.join(10)


def _gauges(url: str) -> dict[str, float]:
    text = httpx.get(url + "/v1/metrics", timeout=10).text
    return {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(text)
        if family.type == "gauge" and family.samples
    }


def _wait(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.mark.parametrize("data_path", ["lean", "framework"])
def test_only_inference_counts_and_a_stream_holds_the_clock(
    front: Callable[..., tuple[str, ServerState]], data_path: str
) -> None:
    url, state = front(data_path, **{contract.IDLE_STOP: "1h"})
    _wait(lambda: (state.idle.idle_seconds() or 0) > 0.05)
    before = state.idle.idle_seconds() or 0.0
    for path in ("/v1/health/ready", "/v1/health/live", "/v1/metrics", "/v1/models", "/v1/metadata"):
        assert httpx.get(url + path, timeout=10).status_code == 200, path
    assert (state.idle.idle_seconds() or 0) >= before  # probes, scrapes and listings are no use
    gauges = _gauges(url)
    assert gauges["nimctl_idle_stop_seconds"] == 3600
    assert gauges["nimctl_idle_seconds"] >= before

    stream = {**CHAT, "stream": True}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", url + "/v1/chat/completions", json=stream) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("data:")  # the stream runs; the engine holds it open
        assert state.idle.active == 1 and state.idle.idle_seconds() == 0
        assert _gauges(url)["nimctl_idle_seconds"] == 0
        RELEASE.set()
        list(lines)
    _wait(lambda: state.idle.active == 0)
    assert (state.idle.idle_seconds() or 0) < before  # its end restarted the clock
    RELEASE.clear()
    _wait(lambda: (state.idle.idle_seconds() or 0) > 0.05)  # idle long enough for the next reset to show
    idle = state.idle.idle_seconds() or 0.0
    assert (
        httpx.post(url + "/tokenize", json={"model": "tiny-llm", "prompt": "hi"}, timeout=10).status_code
        == 200
    )
    assert (state.idle.idle_seconds() or 0) < idle


def test_idle_gauges_are_absent_when_off_or_not_ready(front: Callable[..., tuple[str, ServerState]]) -> None:
    url, state = front("lean")
    gauges = _gauges(url)
    assert "nimctl_idle_stop_seconds" not in gauges  # off
    assert "nimctl_idle_seconds" in gauges  # shown whenever ready: ps and top read it
    state.set_phase(Phase.loading)
    assert "nimctl_idle_seconds" not in _gauges(url)
    assert "nimctl_prompt_tokens_per_second" not in gauges  # no samples from this stand-in
