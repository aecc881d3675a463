"""Relaying inference requests to the engine.

Bodies are passed through as bytes. Streams are relayed chunk by chunk as they arrive,
and when the client goes away the upstream response is closed at once so that vLLM
aborts the generation.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from nimctl.server.http_errors import openai_error

if TYPE_CHECKING:
    from nimctl.server.state import ServerState

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


def _forwardable(headers: Any) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key.lower() not in _HOP_BY_HOP}


class _RelayedStream(Response):
    """Sends an upstream streaming body on, closing upstream when either side ends."""

    def __init__(self, upstream: httpx.Response) -> None:
        self.upstream = upstream
        self.status_code = upstream.status_code
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
                await send(
                    {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                )
                async for chunk in self.upstream.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client went away while we wrote: nothing left to tell it
        finally:
            await self.upstream.aclose()


class EngineProxy:
    def __init__(self, state: ServerState, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.state = state
        self.client = httpx.AsyncClient(
            base_url=state.plan.engine_url,
            transport=transport,
            timeout=httpx.Timeout(None, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def not_ready(self) -> Response | None:
        if self.state.ready:
            return None
        return openai_error(503, f"model is not ready: {self.state.message}", headers={"Retry-After": "5"})

    async def relay(self, request: Request, body: bytes | None = None) -> Response:
        """Send ``request`` (with ``body`` if already read) to the engine and relay the answer."""
        if (refusal := self.not_ready()) is not None:
            return refusal
        outgoing = self.client.build_request(
            request.method,
            request.url.path,
            params=request.query_params,
            headers=_forwardable(request.headers),
            content=body if body is not None else await request.body(),
        )
        try:
            upstream = await self._send(outgoing)
        except httpx.TransportError as exc:
            return openai_error(503, f"engine is not answering: {type(exc).__name__}")
        if upstream.headers.get("content-type", "").startswith("text/event-stream"):
            return _RelayedStream(upstream)
        try:
            content = await upstream.aread()
        finally:
            await upstream.aclose()
        return Response(content, status_code=upstream.status_code, headers=_forwardable(upstream.headers))

    async def _send(self, outgoing: httpx.Request) -> httpx.Response:
        try:
            return await self.client.send(outgoing, stream=True)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            # vLLM closes a keep-alive connection after some of its 500s; the pooled connection
            # is then dead before our request reached it, and one retry on a fresh one is safe.
            return await self.client.send(outgoing, stream=True)

    async def get_json(self, path: str) -> tuple[int, Any]:
        response = await self.client.get(path, timeout=10)
        return response.status_code, _json_or_none(response.content)

    async def post_json(self, path: str, payload: Any) -> tuple[int, Any]:
        response = await self.client.post(path, json=payload, timeout=60)
        return response.status_code, _json_or_none(response.content)


def _json_or_none(content: bytes) -> Any:
    with contextlib.suppress(ValueError):
        return json.loads(content)
    return None
