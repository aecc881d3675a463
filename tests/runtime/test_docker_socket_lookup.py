"""The default target's quick question to the Docker daemon, against stand-in daemons on a Unix socket.

The real daemon is asked in tests/docker/test_default_target.py; here are the answers a real
one rarely gives: nonsense, a body that drips, an error status.
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from nimctl.runtime.docker_client import running_container_urls
from tests.json_http import send_json

Answer = Callable[[BaseHTTPRequestHandler], None]


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _serve(path: Path, answer: Answer) -> _Server:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer(self)

        def log_message(self, *args: object) -> None:
            pass

        # UnixStreamServer gives no (host, port) client address; BaseHTTPRequestHandler wants one.
        def address_string(self) -> str:
            return "unix"

    server = _Server(str(path), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def _json(status: int, body: object) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        send_json(handler, status, body)

    return answer


def _dripping(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    try:
        for _ in range(40):
            handler.wfile.write(b"1\r\n \r\n")
            handler.wfile.flush()
            time.sleep(0.1)  # the stand-in's drip, the thing under test
    except OSError:
        pass  # the client gave up, as it should


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Answer], None]]:
    servers: list[_Server] = []

    def start(answer: Answer) -> None:
        path = tmp_path / f"docker{len(servers)}.sock"
        servers.append(_serve(path, answer))
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_urls_of_labelled_containers(daemon: Callable[[Answer], None]) -> None:
    seen: list[str] = []
    containers = [
        {"Labels": {"ai.nimctl.managed": "true", "ai.nimctl.url": "http://127.0.0.1:8001"}},
        {"Labels": {"ai.nimctl.managed": "true"}},  # no URL: not a target
        {"Labels": None},
    ]

    def answer(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.path)
        _json(200, containers)(handler)

    daemon(answer)
    assert running_container_urls(2.0) == ["http://127.0.0.1:8001"]
    assert seen and seen[0].startswith("/containers/json?filters=")
    assert "ai.nimctl.managed%3Dtrue" in seen[0] or "ai.nimctl.managed=true" in seen[0]


@pytest.mark.parametrize("body", [None, {"message": "odd"}, "text", [1, "two"]])
def test_an_answer_that_is_not_a_container_list_finds_none(
    daemon: Callable[[Answer], None], body: object
) -> None:
    daemon(_json(200, body))
    assert running_container_urls(2.0) == []


def test_an_error_status_finds_none(daemon: Callable[[Answer], None]) -> None:
    daemon(_json(500, {"message": "daemon trouble"}))
    assert running_container_urls(2.0) == []


def test_a_dripping_daemon_is_given_up_on_near_the_timeout(daemon: Callable[[Answer], None]) -> None:
    daemon(_dripping)
    start = time.monotonic()
    assert running_container_urls(0.5) == []
    assert time.monotonic() - start < 2.0  # the drip would take 4 s


def test_no_socket_and_other_addresses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'absent.sock'}")
    assert running_container_urls(0.5) == []
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert running_container_urls(0.5) is None  # the SDK is asked instead
