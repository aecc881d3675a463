"""The load generator: one process, asyncio, exactly ``concurrency`` requests in flight.

Each level runs ``concurrency`` workers, each with its own connection (an ``httpx.AsyncClient``
of one), so no request waits for a connection, and each sends its next request as soon as its last
one ended. Times are ``time.perf_counter()`` read when the bytes of a chunk come
off the socket; the SSE stream is split by hand (not ``aiter_lines``), which keeps the generator's
own cost per chunk low (``benchmarks/bench_generator.py`` measures it).

A failed request is a result, never an exception: its kind is one of :data:`ERROR_KINDS`.
Cancelling :meth:`LoadGenerator.run_level` (Ctrl-C under ``asyncio.run``) stops the requests in
flight and returns what had finished, marked ``cancelled``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nimctl._httpx import httpx
from nimctl.bench._http import async_client
from nimctl.bench.workload import COMPLETIONS_PATH, EncodedBody
from nimctl.client.errors import error_body, parse_error_body

# http_4xx / http_5xx: the server answered with that status (or said so in an error frame mid-stream);
# timeout: no answer within the request timeout; connection: refused, reset or broken off;
# protocol: an answer that is not what an OpenAI-compatible server sends.
ERROR_KINDS = ("http_4xx", "http_5xx", "timeout", "connection", "protocol")


@dataclass(frozen=True, slots=True)
class RequestResult:
    """One request. Times are ``perf_counter`` seconds; ``first_token`` is None unless streamed."""

    index: int
    start: float
    end: float
    first_token: float | None = None
    input_tokens: int | None = None  # the server's usage
    output_tokens: int | None = None
    chunks: int = 0  # stream chunks that carried a choice
    error_kind: str | None = None
    error: str | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def e2e_s(self) -> float:
        return self.end - self.start

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.start

    @property
    def itl_s(self) -> float | None:
        """AIPerf's inter-token latency of one request: (latency - TTFT) / (output tokens - 1)."""
        if self.first_token is None or self.output_tokens is None or self.output_tokens < 2:
            return None
        return (self.end - self.first_token) / (self.output_tokens - 1)


@dataclass
class LevelRun:
    """What one level did: its finished requests (in the order they finished) and its span."""

    concurrency: int
    start: float
    end: float
    results: list[RequestResult] = field(default_factory=list)
    issued: int = 0  # request indices used, finished or not
    cancelled: bool = False

    @property
    def duration_s(self) -> float:
        return max(self.end - self.start, 0.0)


# A body as a dict (JSON-encoded per request), or already encoded (a large one: see Workload.encoded_body).
BodyFor = Callable[[int], dict[str, Any] | EncodedBody]
OnResult = Callable[[RequestResult], None]


class LoadGenerator:
    """Sends the requests of a level to one server; see :meth:`run_level`."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        tls: ssl.SSLContext | None = None,
        path: str = COMPLETIONS_PATH,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.tls = tls
        self.path = path

    async def run_level(
        self,
        body_for: BodyFor,
        concurrency: int,
        *,
        requests: int | None = None,
        duration_s: float | None = None,
        first_index: int = 0,
        on_result: OnResult | None = None,
    ) -> LevelRun:
        """``requests`` requests, or as many as start within ``duration_s`` (those in flight then are
        waited for), ``concurrency`` at a time. Request ``i`` (from ``first_index``) sends ``body_for(i)``."""
        if (requests is None) == (duration_s is None):
            raise ValueError("give requests or duration_s")
        run = LevelRun(concurrency, start=time.perf_counter(), end=0.0)
        deadline = None if duration_s is None else run.start + duration_s

        async def worker() -> None:
            # A client of one connection per worker: ``concurrency`` connections in all. httpx's pool
            # checks each connection it holds on every request (a poll() each), which made one shared
            # pool of 32 connections the generator's main cost; separate pools are the same
            # connections without that (benchmarks/bench_generator.py: 243 -> 592 requests/s at 32).
            client = async_client(
                self.base_url, api_key=self.api_key, connections=1, timeout_s=self.timeout_s, tls=self.tls
            )
            async with client:
                while (requests is None or run.issued < requests) and (
                    deadline is None or time.perf_counter() < deadline
                ):
                    index = first_index + run.issued
                    run.issued += 1
                    result = await self.send(client, index, body_for(index))
                    run.results.append(result)
                    if on_result is not None:
                        on_result(result)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(worker())
        except asyncio.CancelledError:
            # What finished is kept; the caller learns of the cancel from the flag.
            run.cancelled = True
        # The level ends with its last answer (closing the pool, or a cancel, is not part of it).
        run.end = max((result.end for result in run.results), default=time.perf_counter())
        return run

    async def send(
        self, client: httpx.AsyncClient, index: int, body: dict[str, Any] | EncodedBody
    ) -> RequestResult:
        """One request, streamed or not as ``body["stream"]`` says; every failure becomes a result."""
        if isinstance(body, EncodedBody):
            content, stream = body.content, body.stream
        else:
            content, stream = json.dumps(body).encode(), bool(body.get("stream"))
        start = time.perf_counter()  # after the encoding: the generator's own work is not the server's
        headers = {"Content-Type": "application/json"}
        try:
            async with client.stream("POST", self.path, content=content, headers=headers) as response:
                if response.is_error:
                    await response.aread()
                    return _http_error(index, start, response)
                if stream:
                    return await _read_stream(index, start, response)
                return _read_whole(index, start, await response.aread())
        except httpx.TimeoutException as exc:
            message = f"no answer within {self.timeout_s:g} s ({type(exc).__name__})"
            return _failed(index, start, "timeout", message)
        except httpx.HTTPError as exc:
            return _failed(index, start, "connection", str(exc) or type(exc).__name__)


async def _read_stream(index: int, start: float, response: httpx.Response) -> RequestResult:
    first_text: float | None = None
    first_any: float | None = None
    chunks = 0
    usage: dict[str, Any] = {}
    done = False
    pending = b""
    async for data in response.aiter_raw():
        now = time.perf_counter()
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event names
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                return _failed(
                    index, start, "protocol", f"a stream frame that is not a JSON object: {payload[:200]!r}"
                )
            if "error" in event:
                # vLLM reports an error met mid-stream as a frame; its code says whose fault it was.
                return _error_frame(index, start, event)
            choices = event.get("choices")
            if choices:
                chunks += 1
                if first_any is None:
                    first_any = now
                # The first token is the first text; a chunk of a partial UTF-8 character carries none.
                if first_text is None and any(_has_text(choice) for choice in choices):
                    first_text = now
            if event.get("usage"):
                usage = event["usage"]
    end = time.perf_counter()
    if not done:
        return _failed(index, start, "protocol", "the stream ended without its [DONE] line")
    return RequestResult(
        index,
        start,
        end,
        first_token=first_text if first_text is not None else first_any,
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        chunks=chunks,
    )


def _read_whole(index: int, start: float, content: bytes) -> RequestResult:
    end = time.perf_counter()
    try:
        body = json.loads(content)
    except ValueError:
        return _failed(index, start, "protocol", f"an answer that is not JSON: {content[:200]!r}")
    usage = body.get("usage") if isinstance(body, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    return RequestResult(
        index,
        start,
        end,
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
    )


def _has_text(choice: Any) -> bool:
    if not isinstance(choice, dict):
        return False
    if choice.get("text"):
        return True
    delta = choice.get("delta")
    return isinstance(delta, dict) and bool(delta.get("content"))


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _failed(index: int, start: float, kind: str, message: str, status: int | None = None) -> RequestResult:
    return RequestResult(index, start, time.perf_counter(), error_kind=kind, error=message, status=status)


def _http_error(index: int, start: float, response: httpx.Response) -> RequestResult:
    message, _ = parse_error_body(error_body(response))
    status = response.status_code
    kind = "http_4xx" if status < 500 else "http_5xx"
    return _failed(index, start, kind, f"HTTP {status}: {message or response.reason_phrase}", status)


def _error_frame(index: int, start: float, event: dict[str, Any]) -> RequestResult:
    message, _ = parse_error_body(event)
    error = event.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    kind = "http_4xx" if status < 500 else "http_5xx"
    return _failed(index, start, kind, f"error in the stream: {message or 'no message'}", status)
