"""The client's side of a relayed answer: watching for the client to go away, sending a stream
on as it comes, and the answer when the front ends a request itself (nimctl/server/proxy.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from nimctl.server.http_errors import error_body, openai_error
from nimctl.server.state import CLIENT_GONE, Cut, InFlight, RequestWatch

log = logging.getLogger("nimctl.server")

# An SSE event ends with a blank line; vLLM writes "\n\n".
_EVENT_END = b"\n\n"


async def end_on_disconnect(receive: Receive, watch: RequestWatch) -> None:
    """Ends ``watch`` when the client goes away (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    watch.end(CLIENT_GONE)


def _sse_error(cut: Cut) -> bytes:
    """A stream's last event when the front ends it: the error in OpenAI's stream shape."""
    return b"data: " + json.dumps(error_body(cut.status, cut.message)).encode() + _EVENT_END


class RelayedStream(Response):
    """Sends an upstream streaming body on, closing upstream when either side ends."""

    def __init__(
        self,
        status: int,
        raw_headers: list[tuple[bytes, bytes]],
        chunks: AsyncIterator[bytes],
        finish: Callable[[], None],
        in_flight: InFlight,
        what: str,
    ) -> None:
        self.status_code = status
        self.raw_headers = raw_headers
        self.chunks = chunks
        self.finish = finish  # hands the upstream connection back, or closes it when unread
        self.in_flight = in_flight
        self.what = what  # "POST /v1/chat/completions", for the log
        self.background = None
        self._started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with self.in_flight.watch() as watch:
                watcher = asyncio.create_task(end_on_disconnect(receive, watch))
                try:
                    await self._relay(send)
                except OSError:
                    watch.end(CLIENT_GONE)  # it went away while we wrote: nothing left to tell it
                except aiohttp.ClientError as exc:
                    watch.end(Cut(502, f"the engine's stream broke off: {type(exc).__name__}"))
                finally:
                    watcher.cancel()
            if watch.cut is CLIENT_GONE:
                return
            if watch.cut is not None and not self._started:
                await ended(watch.cut, self.what)(scope, receive, send)
                return
            if watch.cut is not None:
                log.warning("%s: stream ended by the front: %s", self.what, watch.cut.message)
                await send({"type": "http.response.body", "body": _sse_error(watch.cut), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.finish()

    async def _relay(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        self._started = True
        # Whole events only: an error event the front may add must not land inside a cut one.
        pending = b""
        async for chunk in self.chunks:
            data = pending + chunk if pending else chunk
            end = data.rfind(_EVENT_END) + len(_EVENT_END)
            if end < len(_EVENT_END):
                pending = data
                continue
            pending = data[end:]
            await send({"type": "http.response.body", "body": data[:end], "more_body": True})
        if pending:  # the engine's last bytes, whatever they are
            await send({"type": "http.response.body", "body": pending, "more_body": True})


def ended(cut: Cut, what: str) -> Response:
    if cut is CLIENT_GONE:
        # Nobody reads this; the status is for the front's request metrics (nginx's "client closed").
        return Response(status_code=cut.status)
    log.warning("%s: ended by the front: %s", what, cut.message)
    return openai_error(cut.status, cut.message, headers={"Retry-After": "5"})
