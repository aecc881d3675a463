"""The front's request limits (nimctl/server/limits.py, request_checks.BodyLimits) against a real server.

One server with small limits serves the whole module. The rate-limit test spends the caller's
whole budget, so it is the last test here (pytest runs a module's tests in order).
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from nimctl.server.limits import RateLimiter
from nimctl.server.request_checks import BadRequestError, BodyLimits, check_body
from tests.conftest import TEST_MODEL
from tests.server_process import ServerProcess

MODEL = "tiny-vlm"
MAX_BODY = 64 * 1024
BODY_TIMEOUT_S = 2
QUEUE_TIMEOUT_S = 1
RATE_RPM = 60
LIMITS_ENV = {
    "NIMCTL_MAX_BODY_BYTES": str(MAX_BODY),
    "NIMCTL_MAX_HEADER_BYTES": "4096",
    "NIMCTL_BODY_TIMEOUT": str(BODY_TIMEOUT_S),
    "NIMCTL_MAX_MESSAGES": "4",
    "NIMCTL_MAX_CONTENT_PARTS": "3",
    "NIMCTL_MAX_TOKENS_CAP": "3000",
    "NIMCTL_MAX_N": "2",
    "NIMCTL_MAX_CONCURRENT_REQUESTS": "1",
    "NIMCTL_QUEUE_TIMEOUT": str(QUEUE_TIMEOUT_S),
    "NIMCTL_RATE_LIMIT_RPM": str(RATE_RPM),
}


@pytest.fixture(scope="module")
def limited(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("limits-logs") / "nim-serve.log"
    server = ServerProcess(TEST_MODEL, model_cache, log, env=LIMITS_ENV)
    with server.running():
        yield server


@pytest.fixture(scope="module")
def client(limited: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=limited.url + "/v1", api_key="unused", timeout=60, max_retries=0)


def openai_error(response: httpx.Response | bytes, status: int) -> dict[str, object]:
    if isinstance(response, bytes):
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.split(b" ", 2)[1] == str(status).encode(), response[:200]
        error = json.loads(body)["error"]
    else:
        assert response.status_code == status, response.text
        error = response.json()["error"]
    assert error["code"] == status and error["message"], error
    return error


def raw_request(server: ServerProcess, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(head.encode())
    return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (every refusal here closes the connection)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        # Closing with the client's bytes unread makes the kernel send a reset, which may come
        # while the answer is read: what came before it is the answer.
        if not data:
            raise
    return data


def chat(content: object = "hi", **fields: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


# --- Unit checks of the body limits (no engine) ----------------------------------------------------


def test_body_limits_in_check_body() -> None:
    limits = BodyLimits(max_messages=2, max_content_parts=2, max_tokens=10, max_n=2)
    ok = json.dumps(chat([{"type": "text", "text": "a"}], max_tokens=10, n=2)).encode()
    check_body(ok, max_image_pixels=1, limits=limits)
    too_many = [
        ({"messages": [{"role": "user", "content": "x"}] * 3}, "messages"),
        (chat([{"type": "text", "text": "a"}] * 3), "messages[0].content"),
        (chat(max_tokens=11), "max_tokens"),
        (chat(max_completion_tokens=11), "max_completion_tokens"),
        (chat(n=3), "n"),
    ]
    for body, param in too_many:
        with pytest.raises(BadRequestError) as caught:
            check_body(json.dumps(body).encode(), max_image_pixels=1, limits=limits)
        assert caught.value.param == param


def test_rate_limiter_refills_at_the_configured_rate() -> None:
    limiter = RateLimiter(rpm=2)
    assert limiter.take("k", now=0) == 0 and limiter.take("k", now=0) == 0
    assert limiter.take("k", now=0) == pytest.approx(30)  # one token every 30 s
    assert limiter.take("other", now=0) == 0  # buckets are per key
    assert limiter.take("k", now=30) == 0


# --- Against the real server -----------------------------------------------------------------------


def test_a_declared_length_over_the_limit_is_413_up_front(limited: ServerProcess) -> None:
    sock = raw_request(
        limited,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {MAX_BODY + 1}\r\n\r\n",
    )
    with sock:  # no body sent at all: the answer comes from the header alone
        error = openai_error(read_response(sock), 413)
    assert "NIMCTL_MAX_BODY_BYTES" in str(error["message"])


def test_a_streamed_body_over_the_limit_is_refused_before_it_is_all_sent(limited: ServerProcess) -> None:
    chunk = b"x" * 8192
    total = 64 * 1024 * 1024  # a thousand times the limit: the refusal must come long before
    sock = raw_request(
        limited,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
    )
    sent = 0
    with sock:
        try:
            while sent < total:
                # A short pause per chunk lets the answer be read before the reset that follows it.
                if select.select([sock], [], [], 0.002)[0]:
                    break  # the server has answered
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it closed while we were still sending: the answer is already in our buffer
        openai_error(read_response(sock), 413)
    assert sent < total // 16, sent


def test_a_trickling_body_is_cut_after_the_deadline(limited: ServerProcess) -> None:
    sock = raw_request(
        limited,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        'Content-Length: 1000\r\n\r\n{"model": ',
    )
    started = time.monotonic()
    with sock:
        error = openai_error(read_response(sock), 408)
    assert BODY_TIMEOUT_S <= time.monotonic() - started < BODY_TIMEOUT_S + 10
    assert "NIMCTL_BODY_TIMEOUT" in str(error["message"])


def test_headers_over_the_limit_are_refused(limited: ServerProcess) -> None:
    response = httpx.get(limited.url + "/v1/health/live", headers={"x-big": "a" * 8192}, timeout=30)
    error = openai_error(response, 431)
    assert "NIMCTL_MAX_HEADER_BYTES" in str(error["message"])
    assert httpx.get(limited.url + "/v1/health/live", headers={"x-ok": "a" * 512}, timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}] * 5}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 4}]}, "messages[0].content"),
        ({"max_tokens": 3001}, "max_tokens"),
        ({"max_completion_tokens": 3001}, "max_completion_tokens"),
        ({"n": 3}, "n"),
    ],
)
def test_size_caps_are_400_in_openai_shape(client: openai.OpenAI, fields: dict[str, object], param: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)  # type: ignore[call-overload]
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param


def test_requests_over_the_concurrency_limit_wait_then_get_429(
    client: openai.OpenAI, limited: ServerProcess
) -> None:
    # The longest stream the cap allows (about 6 s on the tiny model): the one slot stays taken for
    # several times the queue timeout, even on a loaded machine.
    long = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=int(LIMITS_ENV["NIMCTL_MAX_TOKENS_CAP"]),
        stream=True,
        extra_body={"ignore_eos": True},
    )
    try:
        chunks = iter(long)
        next(chunks)  # the first chunk: the one slot is taken
        started = time.monotonic()
        response = httpx.post(limited.url + "/v1/chat/completions", json=chat(max_tokens=1), timeout=30)
        waited = time.monotonic() - started
        if response.status_code == 200:
            # Say why: the premise (the stream still running) failed, or the slot was not held.
            rest = sum(1 for _ in chunks)
            pytest.fail(f"got through after {waited:.2f} s; the long stream then sent {rest} more chunks")
        error = openai_error(response, 429)
        assert "NIMCTL_MAX_CONCURRENT_REQUESTS" in str(error["message"])
        assert response.headers["retry-after"] == str(QUEUE_TIMEOUT_S)
        assert waited >= QUEUE_TIMEOUT_S * 0.9  # it queued before it was refused
    finally:
        long.close()
    # The slot comes back when the stream ends: the next request waits for it and gets through.
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert answer.choices


def test_the_rate_limit_is_429_with_retry_after(limited: ServerProcess) -> None:
    # Last in the module: this spends the whole per-minute budget of the test's address.
    # A burst of RATE_RPM, plus what refills while the loop runs (one a second): a 429 comes well within 2x.
    for _ in range(2 * RATE_RPM):
        response = httpx.post(limited.url + "/tokenize", json={"model": MODEL, "prompt": "hi"}, timeout=30)
        if response.status_code == 429:
            break
        assert response.status_code == 200, response.text
    error = openai_error(response, 429)
    assert "NIMCTL_RATE_LIMIT_RPM" in str(error["message"])
    assert error["type"] == "RateLimitError"
    assert 1 <= int(response.headers["retry-after"]) <= 60 // RATE_RPM + 1
