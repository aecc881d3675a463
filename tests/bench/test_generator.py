"""The load generator against the stand-in: timings per chunk, concurrency, failures, cancel."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from nimctl.bench.generator import LevelRun, LoadGenerator, RequestResult
from nimctl.bench.workload import Workload
from tests.bench.conftest import StandIn
from tests.server_process import free_port


def bodies(output_tokens: int = 5, stream: bool = True) -> Callable[[int], dict[str, Any]]:
    workload = Workload((1,), 8, output_tokens, requests=1, stream=stream)
    return lambda index: workload.request_body("m", f"the of and to in is {index}")


def test_streamed_timings_and_usage(standin: Callable[..., StandIn]) -> None:
    server = standin("--ttft", "0.08", "--itl", "0.02")
    run = asyncio.run(LoadGenerator(server.url).run_level(bodies(5), 2, requests=4))
    assert run.issued == 4 and not run.cancelled
    assert sorted(result.index for result in run.results) == [0, 1, 2, 3]
    for result in run.results:
        assert result.ok, result.error
        assert (result.input_tokens, result.output_tokens, result.chunks) == (8, 5, 5)
        # Lower bounds from the server's sleeps; upper ones loose, for a busy CI machine.
        assert 0.08 <= result.ttft_s < 0.5  # type: ignore[operator]
        assert 0.015 <= result.itl_s < 0.1  # type: ignore[operator]
        assert result.e2e_s >= 0.16
    # Two at a time, two waves of ~0.16 s each.
    assert 0.32 <= run.duration_s < 2


def test_not_streamed(standin: Callable[..., StandIn]) -> None:
    server = standin("--ttft", "0.05")
    run = asyncio.run(LoadGenerator(server.url).run_level(bodies(3, stream=False), 1, requests=2))
    assert [(r.ok, r.output_tokens, r.first_token, r.chunks) for r in run.results] == [(True, 3, None, 0)] * 2


def test_exactly_concurrency_in_flight(standin: Callable[..., StandIn]) -> None:
    """Eight 0.2 s requests four at a time take two waves, on four connections."""
    server = standin("--ttft", "0.2")
    seen: list[RequestResult] = []
    run = asyncio.run(LoadGenerator(server.url).run_level(bodies(1), 4, requests=8, on_result=seen.append))
    assert seen == run.results and len(seen) == 8
    starts = sorted(result.start - run.start for result in run.results)
    assert max(starts[:4]) < 0.15 and min(starts[4:]) >= 0.2  # the second wave waits for the first
    assert 0.4 <= run.duration_s < 2


def test_duration_level(standin: Callable[..., StandIn]) -> None:
    server = standin("--ttft", "0.05")
    run = asyncio.run(LoadGenerator(server.url).run_level(bodies(1), 2, duration_s=0.5, first_index=100))
    assert 6 <= len(run.results) <= 22 and run.issued == len(run.results)  # ~20 on an idle machine
    assert min(result.index for result in run.results) == 100
    assert all(result.start - run.start < 0.5 for result in run.results)


def test_http_errors_are_counted_by_kind(standin: Callable[..., StandIn]) -> None:
    server = standin("--fail", "503")
    run = asyncio.run(LoadGenerator(server.url).run_level(bodies(), 2, requests=3))
    assert [(r.ok, r.error_kind, r.status) for r in run.results] == [(False, "http_5xx", 503)] * 3
    assert run.results[0].error == "HTTP 503: stand-in failure 503"
    rejected = standin("--fail", "400")
    run = asyncio.run(LoadGenerator(rejected.url).run_level(bodies(), 1, requests=1))
    assert run.results[0].error_kind == "http_4xx"


def test_unreachable_and_timeout() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    run = asyncio.run(LoadGenerator(closed).run_level(bodies(), 2, requests=4))
    assert [result.error_kind for result in run.results] == ["connection"] * 4


def test_read_timeout(standin: Callable[..., StandIn]) -> None:
    server = standin("--ttft", "5")
    started = time.monotonic()
    run = asyncio.run(LoadGenerator(server.url, timeout_s=0.3).run_level(bodies(), 2, requests=2))
    assert [result.error_kind for result in run.results] == ["timeout"] * 2
    assert time.monotonic() - started < 3


def test_server_killed_mid_level(standin: Callable[..., StandIn]) -> None:
    """Requests in flight and those after fail as connection errors; the level ends, no hang."""
    server = standin("--ttft", "0.05", "--itl", "0.05")
    killer = threading.Timer(0.5, server.kill)
    killer.start()
    started = time.monotonic()
    run = asyncio.run(LoadGenerator(server.url, timeout_s=5).run_level(bodies(5), 2, requests=40))
    killer.join()
    assert time.monotonic() - started < 5
    assert len(run.results) == 40
    ok = [result for result in run.results if result.ok]
    failed = [result for result in run.results if not result.ok]
    assert 1 <= len(ok) <= 8  # ~0.25 s each, two at a time, for 0.5 s (a busy machine is slower)
    assert {result.error_kind for result in failed} == {"connection"}
    assert len(failed) >= 32


def test_cancel_returns_what_finished(standin: Callable[..., StandIn]) -> None:
    server = standin("--ttft", "0.1")

    async def cancel_soon() -> LevelRun:
        task = asyncio.create_task(LoadGenerator(server.url).run_level(bodies(1), 2, requests=100))
        await asyncio.sleep(0.35)
        task.cancel()
        return await task

    started = time.monotonic()
    run = asyncio.run(cancel_soon())
    assert run.cancelled
    assert 2 <= len(run.results) <= 6 and all(result.ok for result in run.results)  # 6 on an idle machine
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("bad", [b"data: not json\n\n", b"data: [1]\n\n"])
def test_unreadable_stream_frames(bad: bytes) -> None:
    from nimctl._httpx import httpx
    from nimctl.bench.generator import _read_stream

    async def read() -> RequestResult:
        response = httpx.Response(200, stream=httpx.ByteStream(b'data: {"choices": []}\n\n' + bad))
        return await _read_stream(0, time.perf_counter(), response)

    result = asyncio.run(read())
    assert result.error_kind == "protocol" and "not a JSON object" in (result.error or "")


def test_error_frame_and_missing_done() -> None:
    from nimctl._httpx import httpx
    from nimctl.bench.generator import _read_stream

    async def read(content: bytes) -> RequestResult:
        response = httpx.Response(200, stream=httpx.ByteStream(content))
        return await _read_stream(0, time.perf_counter(), response)

    frame = (
        b'data: {"choices":[{"text":"a"}]}\n\ndata: {"error": {"message": "engine died", "code": 500}}\n\n'
    )
    result = asyncio.run(read(frame))
    assert (result.error_kind, result.status, result.error) == (
        "http_5xx",
        500,
        "error in the stream: engine died",
    )
    cut = asyncio.run(read(b'data: {"choices":[{"text":"a"}]}\n\n'))
    assert cut.error_kind == "protocol" and "[DONE]" in (cut.error or "")
    # A first chunk without text (half a UTF-8 character) is not the first token.
    split = b'data: {"choices":[{"text":""}]}\n\ndata: {"choices":[{"text":"b"}]}\n\ndata: [DONE]\n\n'
    whole = asyncio.run(read(split))
    assert whole.ok and whole.chunks == 2 and whole.first_token is not None
