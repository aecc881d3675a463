"""A lean HTTP/1.1 client for the engine's loopback port, for the relayed inference requests.

aiohttp cost the front about a fifth of its CPU per request (building a ClientRequest, its
headers' multidicts, timers, a payload writer, a StreamReader per response). This client does
only what relaying needs: one write of the request (its header block built by the caller in the
one pass over the client's headers), httptools (the C parser uvicorn uses) for the answer, and a
pool of keep-alive connections. It keeps the behaviours of the aiohttp relay it replaces
(nimctl/server/proxy.py, where the front's own calls still use aiohttp):

- a request that meets a pooled connection the engine has just closed, before any byte of an
  answer, is sent again on a new connection (``STALE_RETRIES``), never after an answer began;
- a connection that carried a 5xx, or ``Connection: close``, is not used again (vLLM closes its
  side a moment after some 500s);
- idle connections are let go after ``KEEPALIVE_S``, before vLLM's own 5 s keep-alive ends them;
- a response dropped before its end closes its connection: vLLM then aborts the generation.

Failures raise aiohttp's exception types, so that the relay's handling is one for both clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httptools

# Retries, each on a new connection, of a request whose pooled connection was found closed.
STALE_RETRIES = 2
KEEPALIVE_S = 3.0  # below vLLM's VLLM_HTTP_TIMEOUT_KEEP_ALIVE (5 s)
CONNECT_TIMEOUT_S = 5.0
# Bytes of an answer held for a client that reads slower than the engine writes; past it the front
# stops reading from the engine (TCP then slows the engine), as aiohttp's reader did.
READ_HIGH_WATER = 256 * 1024


class _StaleConnectionError(aiohttp.ServerDisconnectedError):
    """The connection closed before any byte of the answer: the request may be sent again."""


class EngineResponse:
    """One answer of the engine: its status and headers at once, its body as it arrives."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_type = ""
        self.keep_alive = True

    @property
    def complete(self) -> bool:
        return self._connection.complete

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.chunks()]
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it comes: what arrived since the last wake-up, joined."""
        connection = self._connection
        while True:
            if connection.body:
                data = b"".join(connection.body) if len(connection.body) > 1 else connection.body[0]
                connection.take_body()
                yield data
                continue
            if connection.complete:
                return
            if connection.error is not None:
                raise connection.error
            await connection.wait()

    def finish(self) -> None:
        """Done with the answer: its connection goes back to the pool if it may, else is closed.
        A second call does nothing (the connection may be another request's by then)."""
        if self._connection.response is not self:
            return
        self._connection.release(reuse=self.complete and self.keep_alive and self.status < 500)


class _Connection(asyncio.Protocol):
    def __init__(self, client: EngineClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: EngineResponse | None = None
        self.body: list[bytes] = []
        self.complete = False
        self.head_seen = False
        self.error: Exception | None = None
        self.closed = False
        self.buffered = 0  # bytes in ``body``
        self.reading_paused = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(aiohttp.ClientPayloadError(f"the engine's answer could not be parsed: {exc}"))
            self.close()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None and not self.complete:
            stale = not self.head_seen and not self.body
            self._fail(_StaleConnectionError() if stale else aiohttp.ServerDisconnectedError())
        self.client.forget(self)
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            response.headers.clear()
            return
        self.head_seen = True
        response.status = status
        response.keep_alive = self.parser.should_keep_alive()
        for name, value in response.headers:
            if name == b"content-type":
                response.content_type = value.split(b";", 1)[0].strip().decode("latin-1").lower()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > READ_HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def take_body(self) -> None:
        self.body.clear()
        self.buffered = 0
        if self.reading_paused and not self.closed and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def on_message_complete(self) -> None:
        if self.head_seen:  # not the end of an interim answer
            self.complete = True

    # the client's side
    def send(self, request: bytes) -> EngineResponse:
        self.response = EngineResponse(self)
        self.take_body()
        self.complete = self.head_seen = False
        self.error = None
        assert self.transport is not None
        self.transport.write(request)
        return self.response

    async def head(self) -> None:
        while not self.head_seen:
            if self.error is not None:
                raise self.error
            if self.closed:
                raise _StaleConnectionError()
            await self.wait()

    async def wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error

    def release(self, *, reuse: bool) -> None:
        self.response = None
        if reuse and not self.closed:
            self.parser = httptools.HttpResponseParser(self)  # a new message: a clean parser
            self.idle_since = time.monotonic()
            self.client.park(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class EngineClient:
    """Keep-alive connections to one loopback ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.host_header = f"{host}:{port}".encode()
        self._idle: list[_Connection] = []

    async def request(self, method: str, target: str, header_block: bytes, body: bytes) -> EngineResponse:
        """Send one request; ``header_block`` is its headers as on the wire, each line ending CRLF,
        without Host and Content-Length. Raises aiohttp.ClientError when the engine is not there."""
        request = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
            method.encode(),
            target.encode("latin-1"),
            self.host_header,
            len(body),
            header_block,
            body,
        )
        for attempt in range(STALE_RETRIES + 1):
            connection = self._pooled() if attempt == 0 else None
            if connection is None:
                connection = await self._connect()
            response = connection.send(request)
            try:
                await connection.head()
            except _StaleConnectionError:
                connection.close()
                if attempt == STALE_RETRIES:
                    raise
                continue
            except BaseException:
                connection.close()  # cancelled or failed mid-answer: never pooled
                raise
            return response
        raise AssertionError("unreachable")

    def _pooled(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE_S:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, protocol = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError as exc:
            raise aiohttp.ClientConnectionError(f"cannot connect to the engine: {exc}") from exc
        except TimeoutError as exc:
            raise aiohttp.ClientConnectionError("connecting to the engine timed out") from exc
        return protocol

    def park(self, connection: _Connection) -> None:
        self._idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def header_block(pairs: Any) -> bytes:
    """Raw ``(name, value)`` pairs as request header lines."""
    return b"".join(name + b": " + value + b"\r\n" for name, value in pairs)
