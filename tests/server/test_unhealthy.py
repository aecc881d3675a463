"""Readiness follows the engine: ready turns 503 when a ready engine stops answering, and 200 again after.

The engine is frozen with SIGSTOP (alive, port open, no answers) rather than killed, which is the
supervisor's "unhealthy" path, not its "engine exited" one (tests/server/test_lifecycle.py). The
shared session server is used: SIGCONT in ``finally`` and the wait for readiness that follows
give it back to the other tests as it was, which costs far less than a server of its own.
"""

from __future__ import annotations

import contextlib
import signal
import time

import httpx
import psutil
import pytest

from nimctl.server.supervisor import READY_POLL_S, UNHEALTHY_AFTER
from tests.server_process import ServerProcess, engine_process

# The supervisor's probe gives the engine this long to answer (``Supervisor._probe``).
PROBE_TIMEOUT_S = 5.0
# Worst case to notice: UNHEALTHY_AFTER probes that each time out, a poll interval between them.
UNHEALTHY_DEADLINE_S = 2 * UNHEALTHY_AFTER * (PROBE_TIMEOUT_S + READY_POLL_S) + 10
RECOVERY_DEADLINE_S = 60.0
POLL_S = 0.25


def _ready(server: ServerProcess) -> httpx.Response:
    return httpx.get(server.url + "/v1/health/ready", timeout=5)


def _poll_ready_until(server: ServerProcess, status: int, deadline_s: float) -> tuple[httpx.Response, float]:
    """The first /v1/health/ready answer with ``status``, and how long it took to come."""
    start = time.monotonic()
    seen: list[int] = []
    while True:
        assert server.process is not None and server.process.poll() is None, server.log_tail()
        response = _ready(server)
        if response.status_code == status:
            return response, time.monotonic() - start
        if not seen or seen[-1] != response.status_code:
            seen.append(response.status_code)
        if time.monotonic() - start > deadline_s:
            pytest.fail(f"ready never answered {status} within {deadline_s:.0f} s (saw {seen})")
        time.sleep(POLL_S)


def test_ready_turns_503_when_the_engine_stops_answering_and_200_when_it_answers_again(
    nim_server: ServerProcess,
) -> None:
    if nim_server.process is None:
        pytest.skip("server started outside the tests: its engine process is not ours to stop")
    assert _ready(nim_server).status_code == 200
    engine = engine_process(nim_server.process.pid)
    restored = False
    engine.send_signal(signal.SIGSTOP)
    try:
        response, _ = _poll_ready_until(nim_server, 503, UNHEALTHY_DEADLINE_S)
        body = response.json()
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == 503
        assert "health check" in error["message"]
        assert body["status"] == "unhealthy"
        assert body["object"] == "health.response"
        # The front itself still answers: live stays 200, inference is refused in OpenAI's shape.
        assert httpx.get(nim_server.url + "/v1/health/live", timeout=5).status_code == 200
        models = httpx.get(nim_server.url + "/v1/models", timeout=5)
        assert models.status_code == 503
        assert models.json()["error"]["code"] == 503
        assert "engine stopped answering its health check" in nim_server.log_tail(80)

        engine.send_signal(signal.SIGCONT)
        response, _ = _poll_ready_until(nim_server, 200, RECOVERY_DEADLINE_S)
        restored = True
        assert response.json()["status"] == "ready"
        # Ready again without a restart: the same engine process, which answers through the front.
        assert engine_process(nim_server.process.pid).pid == engine.pid
        assert httpx.get(nim_server.url + "/v1/models", timeout=30).status_code == 200
        chat = {"model": "tiny-vlm", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        reply = httpx.post(nim_server.url + "/v1/chat/completions", json=chat, timeout=60)
        assert reply.status_code == 200, reply.text  # the engine generates again, not just lists
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            engine.send_signal(signal.SIGCONT)  # whatever happened, the shared engine runs again
        if not restored:
            with contextlib.suppress(Exception):
                nim_server.wait_ready(RECOVERY_DEADLINE_S)
