"""CLI test helpers: run nimctl in-process with Typer's CliRunner, and a server that never gets ready."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from nimctl.cli.main import app
from tests.server_process import free_port


def nimctl(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """``nimctl ARGS`` in-process; stdout and stderr are kept apart."""
    # Rich fits tables to 80 columns when stdout is not a terminal; 64-hex profile ids need more.
    base = {"NO_COLOR": "1", "COLUMNS": "250"}
    return CliRunner().invoke(app, list(args), input=input, env={**base, **(env or {})})


def error_line(result: Result) -> str:
    return result.stderr.strip().splitlines()[0] if result.stderr.strip() else ""


class _LoadingHandler(BaseHTTPRequestHandler):
    """A front whose engine is still loading: live 200, everything else 503 in OpenAI's shape.

    ``/v1/metadata`` answers 500 so that the server-error path can be checked too.
    """

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> None:
        if self.path == "/v1/health/live":
            self._answer(200, {"object": "health.response", "message": "service is live", "status": "live"})
        elif self.path == "/v1/metadata":
            error = {"message": "metadata exploded", "type": "InternalServerError", "param": None, "code": 500}
            self._answer(500, {"error": error})
        else:
            error = {"message": "model is loading", "type": "ServiceUnavailableError", "param": None, "code": 503}
            self._answer(503, {"error": error})

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._route()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def loading_server() -> Iterator[str]:
    """URL of a server that is live but never ready."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LoadingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def closed_url() -> str:
    """A URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
