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
# A pooled connection the engine closed (it does after some of its 500s) fails like this
# before our request reaches it: one retry on a fresh connection is safe.
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def _forwardable(headers: Any) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key.lower() not in _HOP_BY_HOP}


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
            if self.upstream.content.at_eof():
                self.upstream.release()  # read to the end: the connection goes back to the pool
            else:
                self.upstream.close()  # dropped mid-stream: vLLM aborts the request


class EngineProxy:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the server's event loop, once the engine's port is known.
        if self._session is None:
            if self.state.engine_url is None:
                # Every caller already handles an engine that cannot be reached (503).
                raise aiohttp.ClientConnectionError("the engine has not been started yet")
            self._session = aiohttp.ClientSession(
                self.state.engine_url,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

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
            upstream = await self._send(request, body)
            if upstream.content_type == "text/event-stream":
                return _RelayedStream(upstream)
            try:
                content = await upstream.read()
            finally:
                upstream.release()
        except aiohttp.ClientError as exc:
            return engine_unavailable(exc)
        return Response(content, status_code=upstream.status, headers=_forwardable(upstream.headers))

    async def _send(self, request: Request, body: bytes) -> aiohttp.ClientResponse:
        kwargs: dict[str, Any] = {
            "params": list(request.query_params.multi_items()),
            "headers": _forwardable(request.headers),
            "data": body,
        }
        try:
            return await self.session.request(request.method, request.url.path, **kwargs)
        except _STALE_CONNECTION:
            return await self.session.request(request.method, request.url.path, **kwargs)

    async def call_json(
        self, method: str, path: str, payload: Any = None, timeout: float = 60
    ) -> tuple[int, Any]:
        """A JSON call of the front's own; raises aiohttp.ClientError or TimeoutError when it fails."""
        async with self.session.request(
            method, path, json=payload, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            return response.status, _json_or_none(await response.read())

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
            async with self.session.get(path, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                return await response.text() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None


def engine_unavailable(exc: BaseException) -> Response:
    return openai_error(503, f"engine is not answering: {type(exc).__name__}", headers={"Retry-After": "5"})


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return None
