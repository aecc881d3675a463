"""Relaying inference requests to the engine.

Bodies are passed through as bytes. Streams are relayed chunk by chunk as they arrive.
Every request to the engine runs as a request in flight (:class:`~nimctl.server.state.InFlight`):
when the client goes away the upstream response is closed at once so that vLLM aborts the
generation, streamed or not; when the engine hangs or a SIGTERM drain runs out, the front
ends the request itself, with an error in OpenAI's shape (a final SSE error event for a stream).

Two clients reach the engine. The relayed inference routes go through the lean one
(:mod:`nimctl.server.engine_client`, :meth:`EngineProxy.forward_lean`): on a CPU-bound engine
every cycle the front spends is one the engine does not get (benchmarks/front_overhead.py).
The front's own calls (health, the model list, render) and the framework path
(NIMCTL_FRONT_DATA_PATH=framework) use aiohttp (:meth:`EngineProxy.forward`, ``call_json``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from nimctl.server.engine_client import EngineClient, EngineResponse
from nimctl.server.http_errors import openai_error
from nimctl.server.relayed_stream import RelayedStream, end_on_disconnect, ended
from nimctl.server.state import CLIENT_GONE, Cut

if TYPE_CHECKING:
    from aiohttp.connector import Connection

    from nimctl.server.state import ServerState

log = logging.getLogger("nimctl.server")

# Headers that describe one hop of the connection, not the message.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    # The front has read the whole body already: the engine must not be asked to wait for it.
    "expect",
}
# A pooled connection the engine has closed fails like this before our request reaches it:
# vLLM's uvicorn closes its side right after some of its 500s, and after 5 s idle.
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
# Retries of a request that failed on a stale connection, each on a new connection. A new
# connection is not stale, so the first retry normally settles it; more would hide a dying engine.
STALE_RETRIES = 2
# Idle connections are let go before vLLM's own keep-alive (VLLM_HTTP_TIMEOUT_KEEP_ALIVE, 5 s)
# closes them, so that the pool rarely hands out one the engine is closing at that moment.
KEEPALIVE_S = 3.0


class EngineCutError(aiohttp.ClientError):
    """The front ended a call to the engine (engine hung, or the drain ran out)."""

    def __init__(self, cut: Cut) -> None:
        super().__init__(cut.message)
        self.cut = cut


def forwardable(headers: Any) -> dict[str, str]:
    """``headers`` without the hop-by-hop ones: what goes on to the engine, or back to the client."""
    return {key: value for key, value in headers.items() if key.lower() not in _HOP_BY_HOP}


HOP_BY_HOP_RAW = frozenset(name.encode() for name in _HOP_BY_HOP)  # as ASGI spells header names


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


class _EngineResponse(aiohttp.ClientResponse):
    """A response whose connection is not used again if it carried a 5xx.

    vLLM closes its side a moment after sending some of its 500s (no ``Connection: close``
    said); a request that took that connection from the pool in that moment failed. A race,
    not a rule, so the status is what counts. aiohttp hands a connection back to the pool as
    soon as the body's end arrives, often within ``start``, before the status is known to
    anyone; tests/server/test_faults.py checks that this still takes effect.
    """

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        await super().start(connection)
        if self.status >= 500 and protocol is not None:
            if self.connection is not None:
                protocol.force_close()  # body still to come: closed, not pooled, at its end
            else:
                protocol.close()  # already pooled, and no await since: closed before anyone takes it
        return self


def _finish(response: aiohttp.ClientResponse) -> None:
    """Done with ``response``: its connection goes back to the pool if it was read to the end,
    else it is closed (which makes vLLM abort a generation nobody reads)."""
    if response.content.at_eof():
        response.release()
    else:
        response.close()


class EngineProxy:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._session: aiohttp.ClientSession | None = None
        self._fresh_session: aiohttp.ClientSession | None = None
        self._engine_client: EngineClient | None = None

    def _new_session(self, **connector_options: Any) -> aiohttp.ClientSession:
        if self.state.engine_url is None:
            # Every caller already handles an engine that cannot be reached (503).
            raise aiohttp.ClientConnectionError("the engine has not been started yet")
        return aiohttp.ClientSession(
            self.state.engine_url,
            connector=aiohttp.TCPConnector(limit=0, **connector_options),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            response_class=_EngineResponse,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the server's event loop, once the engine's port is known.
        if self._session is None:
            self._session = self._new_session(keepalive_timeout=KEEPALIVE_S)
        return self._session

    @property
    def fresh_session(self) -> aiohttp.ClientSession:
        """A new connection for every request: where a request that met a stale one is sent again."""
        if self._fresh_session is None:
            self._fresh_session = self._new_session(force_close=True)
        return self._fresh_session

    async def aclose(self) -> None:
        for session in (self._session, self._fresh_session):
            if session is not None:
                await session.close()
        if self._engine_client is not None:
            self._engine_client.close()

    def not_ready(self) -> Response | None:
        if self.state.ready:
            return None
        return openai_error(503, self.state.message, headers={"Retry-After": "5"})

    async def relay(self, request: Request, body: bytes | None = None) -> Response:
        """Send ``request`` (with ``body`` if already read) to the engine and relay the answer."""
        if (refusal := self.not_ready()) is not None:
            return refusal
        if body is None:
            body = await request.body()
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return await self.forward(request.method, target, forwardable(request.headers), body, request.receive)

    async def forward(
        self, method: str, target: str, headers: dict[str, str], body: bytes, receive: Receive
    ) -> Response:
        """Send one request (``target``: path and query; ``headers`` without hop-by-hop ones) to the
        engine; the answer as a Response to send on, a stream relayed as it comes. ``receive`` is the
        client's, its body already read: a disconnect on it ends the request."""
        what = f"{method} {target.partition('?')[0]}"  # no query in the log: it is the client's text
        with self.state.in_flight.watch() as watch:
            watcher = asyncio.create_task(end_on_disconnect(receive, watch))
            upstream: aiohttp.ClientResponse | None = None
            try:
                upstream = await self._request(method, target, headers=headers, data=body)
                if upstream.content_type == "text/event-stream":
                    stream = RelayedStream(
                        upstream.status,
                        _raw(forwardable(upstream.headers)),
                        upstream.content.iter_any(),
                        functools.partial(_finish, upstream),
                        self.state.in_flight,
                        what,
                    )
                    upstream = None
                    return stream  # it watches the client and the cuts itself from here
                content = await upstream.read()
                return Response(content, status_code=upstream.status, headers=forwardable(upstream.headers))
            except aiohttp.ClientError as exc:
                return engine_unavailable(exc)
            finally:
                watcher.cancel()
                if upstream is not None:
                    _finish(upstream)  # closed when dropped unread: vLLM aborts the generation
        # Here only when the request was ended before the engine answered.
        return ended(watch.cut or CLIENT_GONE, what)

    async def forward_lean(
        self, method: str, target: str, header_block: bytes, body: bytes, receive: Receive
    ) -> Response:
        """``forward`` through the lean engine client (:mod:`nimctl.server.engine_client`), with the
        client's headers as they go on the wire (hop-by-hop ones left out)."""
        what = f"{method} {target.partition('?')[0]}"  # no query in the log: it is the client's text
        with self.state.in_flight.watch() as watch:
            if watch.cut is not None:  # a standing cut: nothing goes to the engine
                return ended(watch.cut, what)
            watcher = asyncio.create_task(end_on_disconnect(receive, watch))
            upstream: EngineResponse | None = None
            try:
                upstream = await self.engine_client.request(method, target, header_block, body)
                headers = [(name, value) for name, value in upstream.headers if name not in HOP_BY_HOP_RAW]
                # A 5xx is read whole, a stream too: the relay judges it (inference.py) from its body.
                if upstream.content_type == "text/event-stream" and upstream.status < 500:
                    stream = RelayedStream(
                        upstream.status,
                        headers,
                        upstream.chunks(),
                        upstream.finish,
                        self.state.in_flight,
                        what,
                    )
                    upstream = None
                    return stream  # it watches the client and the cuts itself from here
                content = await upstream.read()
                response = Response(content, status_code=upstream.status)
                response.raw_headers = [*headers, (b"content-length", b"%d" % len(content))]
                return response
            except aiohttp.ClientError as exc:
                return engine_unavailable(exc)
            finally:
                watcher.cancel()
                if upstream is not None:
                    upstream.finish()  # closed when dropped unread: vLLM aborts the generation
        return ended(watch.cut or CLIENT_GONE, what)

    @property
    def engine_client(self) -> EngineClient:
        port = self.state.engine_port
        if port is None:
            raise aiohttp.ClientConnectionError("the engine has not been started yet")
        if self._engine_client is None or self._engine_client.port != port:
            if self._engine_client is not None:
                self._engine_client.close()  # the engine was started again, on another port
            self._engine_client = EngineClient("127.0.0.1", port)
        return self._engine_client

    async def _request(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """Send one request; one that meets a stale pooled connection is sent again on new ones."""
        for attempt in range(STALE_RETRIES):
            session = self.session if attempt == 0 else self.fresh_session
            try:
                return await session.request(method, path, **kwargs)
            except _STALE_CONNECTION as exc:
                if isinstance(exc, aiohttp.ClientConnectorError):
                    raise  # nothing listens: a new connection would be refused too
                log.debug("%s %s met a closed engine connection (%s): sent again", method, path, exc)
        return await self.fresh_session.request(method, path, **kwargs)

    async def call_json(
        self, method: str, path: str, payload: Any = None, timeout: float = 60, *, cuttable: bool = True
    ) -> tuple[int, Any]:
        """A JSON call of the front's own; raises aiohttp.ClientError or TimeoutError when it fails.

        ``cuttable`` calls are requests in flight, ended (EngineCutError) with the others when the
        engine hangs or the drain runs out; the supervisor's health probe is not one of them.
        """
        if not cuttable:
            return await self._call_json(method, path, payload, timeout)
        with self.state.in_flight.watch() as watch:
            return await self._call_json(method, path, payload, timeout)
        raise EngineCutError(watch.cut or Cut(503, "the call to the engine was ended"))

    async def _call_json(self, method: str, path: str, payload: Any, timeout: float) -> tuple[int, Any]:
        limit = aiohttp.ClientTimeout(total=timeout)
        response = await self._request(method, path, json=payload, timeout=limit)
        try:
            return response.status, _json_or_none(await response.read())
        finally:
            _finish(response)

    async def list_models(self, timeout: float, *, cuttable: bool = True) -> list[dict[str, Any]] | None:
        """The entries of the engine's ``/v1/models``; None when it answered, but not 200 with a list.

        Raises aiohttp.ClientError or TimeoutError when it does not answer, as ``call_json``.
        """
        status, listing = await self.call_json("GET", "/v1/models", timeout=timeout, cuttable=cuttable)
        data = listing.get("data") if isinstance(listing, dict) else None
        if status != 200 or not isinstance(data, list):
            return None
        return [entry for entry in data if isinstance(entry, dict)]

    async def get_text(self, path: str, timeout: float) -> str | None:
        """The body of a GET that answered 200, else None (engine loading, gone or slow)."""
        try:
            response = await self._request("GET", path, timeout=aiohttp.ClientTimeout(total=timeout))
            try:
                return await response.text() if response.status == 200 else None
            finally:
                _finish(response)
        except (aiohttp.ClientError, TimeoutError):
            return None


def engine_unavailable(exc: BaseException) -> Response:
    if isinstance(exc, EngineCutError):
        return openai_error(exc.cut.status, exc.cut.message, headers={"Retry-After": "5"})
    return openai_error(503, f"engine is not answering: {type(exc).__name__}", headers={"Retry-After": "5"})


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return None
