"""Readiness follows the engine: ready turns 503 when a ready engine stops answering, and 200 again after.

The engine is frozen with SIGSTOP (alive, port open, no answers) rather than killed, which is the
supervisor's "hung" path, not its "engine exited" one (tests/server/test_lifecycle.py). The
shared session server is used: SIGCONT in ``finally`` and the wait for readiness that follows
give it back to the other tests as it was, which costs far less than a server of its own.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import psutil
import pytest

from nimctl.server.config import ServerConfig
from nimctl.server.supervisor import PROBE_INTERVAL_S, PROBE_TIMEOUT_S
from tests.server_process import ServerProcess, engine_process

# The documented bound: hung after NIMCTL_ENGINE_HUNG_TIMEOUT seconds without an answer, noticed
# by a probe that gives up after PROBE_TIMEOUT_S, PROBE_INTERVAL_S after the one before it.
HUNG_BOUND_S = ServerConfig().engine_hung_timeout + PROBE_TIMEOUT_S + PROBE_INTERVAL_S
# Slack on top, for a loaded machine (2 cores shared with other test runs).
UNHEALTHY_DEADLINE_S = HUNG_BOUND_S + 10
RECOVERY_DEADLINE_S = 60.0
POLL_S = 0.25
CHAT = {"model": "tiny-vlm", "messages": [{"role": "user", "content": "Hi"}]}


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


@contextlib.contextmanager
def _frozen_engine(server: ServerProcess) -> Iterator[psutil.Process]:
    """The engine, SIGSTOPped for the body; running and ready again afterwards, whatever happened."""
    assert server.process is not None
    engine = engine_process(server.process.pid)
    engine.send_signal(signal.SIGSTOP)
    try:
        yield engine
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            engine.send_signal(signal.SIGCONT)
        server.wait_ready(RECOVERY_DEADLINE_S)


def test_requests_in_flight_to_a_hung_engine_end_with_an_error_within_the_bound(
    nim_server: ServerProcess,
) -> None:
    """Before, ready turned 503 only after 22 s and a chat sent to the frozen engine still hung at 45 s."""
    if nim_server.process is None:
        pytest.skip("server started outside the tests: its engine process is not ours to stop")
    stream_lines: list[str] = []
    stream_started = threading.Event()
    answers: dict[str, tuple[int, dict[str, object], float]] = {}
    errors: list[BaseException] = []

    def stream() -> None:
        payload = {**CHAT, "max_tokens": 4000, "ignore_eos": True, "stream": True}
        try:
            with httpx.stream(
                "POST", nim_server.url + "/v1/chat/completions", json=payload, timeout=120
            ) as r:
                for line in r.iter_lines():
                    stream_lines.append(line)
                    stream_started.set()
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
            stream_started.set()

    def chat(frozen_at: float) -> None:
        try:
            reply = httpx.post(
                nim_server.url + "/v1/chat/completions", json={**CHAT, "max_tokens": 8}, timeout=120
            )
            answers["chat"] = (reply.status_code, reply.json(), time.monotonic() - frozen_at)
        except BaseException as exc:
            errors.append(exc)

    streamer = threading.Thread(target=stream)
    streamer.start()
    assert stream_started.wait(120), "the stream never started"
    with _frozen_engine(nim_server):
        frozen_at = time.monotonic()
        chatter = threading.Thread(target=chat, args=(frozen_at,))
        chatter.start()  # sent to the frozen engine, at once
        _, noticed_after = _poll_ready_until(nim_server, 503, UNHEALTHY_DEADLINE_S)
        chatter.join(UNHEALTHY_DEADLINE_S)
        streamer.join(UNHEALTHY_DEADLINE_S)
        assert not chatter.is_alive() and not streamer.is_alive(), "a request to the hung engine still waits"
        assert not errors, errors
        status, body, took = answers["chat"]
        assert status in (503, 504), body
        assert set(body) == {"error"} and body["error"]["code"] == status  # type: ignore[index]
        assert took < UNHEALTHY_DEADLINE_S
        events = [line.removeprefix("data: ") for line in stream_lines if line.startswith("data: ")]
        last = json.loads(events[-1])
        assert set(last) == {"error"} and last["error"]["code"] == 504, last
        assert "stopped answering" in last["error"]["message"]
        assert noticed_after < UNHEALTHY_DEADLINE_S
    # Answering again: ready (waited for above) and generating.
    client = openai.OpenAI(base_url=nim_server.url + "/v1", api_key="x", max_retries=0, timeout=60)
    reply = client.chat.completions.create(**CHAT, max_tokens=4, seed=1)
    assert reply.choices[0].finish_reason in ("length", "stop")
