"""CLI test helpers: run nimctl in-process with Typer's CliRunner; servers that are not ready.

``loading_front`` is nimctl's real front with its engine still loading (nothing behind
it answers), as a user meets it in the minute after `nimctl run`. ``failing_server`` is
a small stand-in that answers 500, a state the real front reaches only when its engine
misbehaves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from nimctl.cli.main import app
from tests.json_http import send_json
from tests.server_process import free_port


def nimctl(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """``nimctl ARGS`` in-process; stdout and stderr are kept apart."""
    # Rich fits tables to 80 columns when stdout is not a terminal; 64-hex profile ids need more.
    base = {"NO_COLOR": "1", "COLUMNS": "250"}
    return CliRunner().invoke(app, list(args), input=input, env={**base, **(env or {})})


def error_line(result: Result) -> str:
    """The ``Error:`` line (a warning may come first: Docker not running), else the first line."""
    lines = result.stderr.strip().splitlines()
    return next((line for line in lines if line.startswith("Error:")), lines[0] if lines else "")


class _FailingHandler(BaseHTTPRequestHandler):
    """Live 200; ``/v1/metadata`` 500 in OpenAI's shape; everything else 503."""

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        send_json(self, status, body)

    def _route(self) -> None:
        if self.path == "/v1/health/live":
            self._answer(200, {"object": "health.response", "message": "service is live", "status": "live"})
        elif self.path == "/v1/metadata":
            error = {
                "message": "metadata exploded",
                "type": "InternalServerError",
                "param": None,
                "code": 500,
            }
            self._answer(500, {"error": error})
        else:
            error = {
                "message": "model is loading",
                "type": "ServiceUnavailableError",
                "param": None,
                "code": 503,
            }
            self._answer(503, {"error": error})

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._route()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def failing_server() -> Iterator[str]:
    """URL of a server whose /v1/metadata fails with 500."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def loading_front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of nimctl's real front, live, whose engine is still loading (it never gets ready)."""
    import uvicorn

    from nimctl.server.app import create_app
    from nimctl.server.config import ServerConfig
    from nimctl.server.plan import build_plan
    from nimctl.server.state import Phase, ServerState

    config = ServerConfig.from_env(
        {},
        model_path="builtin://tiny-vlm",
        cache_path=tmp_path_factory.mktemp("cache"),
        engine_port=free_port(),
    )
    state = ServerState(build_plan(config, environ={}))  # a developer's VLLM_API_KEY must not matter
    state.set_phase(Phase.loading)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(state, supervise=False), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # uvicorn's own flag: the socket is listening
        assert time.monotonic() < deadline and thread.is_alive(), "the front did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture()
def closed_url() -> str:
    """A URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
