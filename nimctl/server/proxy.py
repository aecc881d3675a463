"""Relaying inference requests to the engine.

Bodies are passed through as bytes. Streams are relayed chunk by chunk as they arrive,
and when the client goes away the upstream response is closed at once so that vLLM
aborts the generation.

The relay uses aiohttp: its C HTTP parser costs a fraction of the CPU of a pure-Python
client per streamed chunk, and on a CPU-bound engine every cycle the front spends is one
the engine does not get (see benchmarks/front_overhead.py).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from nimctl.server.http_errors import openai_error

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


def _forwardable(headers: Any) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key.lower() not in _HOP_BY_HOP}


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


class _RelayedStream(Response):
    """Sends an upstream streaming body on, closing upstream when either side ends."""

    def __init__(self, upstream: aiohttp.ClientResponse) -> None:
        self.upstream = upstream
        self.status_code = upstream.status
        self.background = None
        self.init_headers(_forwardable(upstream.headers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(watch_disconnect)
                # Caught here, inside the group, so that they do not leave it as an ExceptionGroup.
                try:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": self.status_code,
                            "headers": self.raw_headers,
                        }
                    )
                    async for chunk in self.upstream.content.iter_any():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:
                    pass  # the client went away while we wrote: nothing left to tell it
                except aiohttp.ClientError as exc:
                    log.warning("engine stream broke off: %s", type(exc).__name__)
                finally:
                    group.cancel_scope.cancel()
        finally:
            _finish(self.upstream)


class EngineProxy:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._session: aiohttp.ClientSession | None = None
        self._fresh_session: aiohttp.ClientSession | None = None

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
        try:
            upstream = await self._request(
                request.method,
                request.url.path,
                params=list(request.query_params.multi_items()),
                headers=_forwardable(request.headers),
                data=body,
            )
            if upstream.content_type == "text/event-stream":
                return _RelayedStream(upstream)
            try:
                content = await upstream.read()
            finally:
                _finish(upstream)
        except aiohttp.ClientError as exc:
            return engine_unavailable(exc)
        return Response(content, status_code=upstream.status, headers=_forwardable(upstream.headers))

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
        self, method: str, path: str, payload: Any = None, timeout: float = 60
    ) -> tuple[int, Any]:
        """A JSON call of the front's own; raises aiohttp.ClientError or TimeoutError when it fails."""
        limit = aiohttp.ClientTimeout(total=timeout)
        response = await self._request(method, path, json=payload, timeout=limit)
        try:
            return response.status, _json_or_none(await response.read())
        finally:
            _finish(response)

    async def list_models(self, timeout: float) -> list[dict[str, Any]] | None:
        """The entries of the engine's ``/v1/models``; None when it answered, but not 200 with a list.

        Raises aiohttp.ClientError or TimeoutError when it does not answer, as ``call_json``.
        """
        status, listing = await self.call_json("GET", "/v1/models", timeout=timeout)
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
    return openai_error(503, f"engine is not answering: {type(exc).__name__}", headers={"Retry-After": "5"})


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return None
