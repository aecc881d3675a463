"""The lean inference path: the relayed POST routes answered in one plain ASGI handler.

Every other request goes through FastAPI (routing, the middleware stack, the exception
handlers). These four routes carry nearly all of a server's traffic, and through the framework
each request paid for six send wrappers per streamed chunk, a routing pass, FastAPI's endpoint
machinery and three header scans. Here the same steps run once each, in the same order and
through the same objects, so the answers are the framework path's, byte for byte:

1. one pass over the headers: the Authorization value, the declared length, the headers' size,
   an Origin, and the headers the engine gets;
2. the key check (:class:`~nimctl.server.auth.KeyCheck`), outside the metrics as in the stack;
3. the metrics, the idle clock and the 503 while draining
   (as :class:`~nimctl.server.middleware.FrontMiddleware`);
4. the limits (:class:`~nimctl.server.limits.RequestLimits`), then the body, read under them;
5. the checks, the relay and the judging of engine errors (:class:`~nimctl.server.inference.InferenceRelay`).

A request with an Origin header goes the framework's way when CORS is configured: the CORS
middleware owns those answers. The framework's routes for these paths stay, for the OpenAPI
document and as the path ``NIMCTL_FRONT_DATA_PATH=framework`` measures against
(benchmarks/front_overhead.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, NamedTuple

from nimctl.server.auth import SCOPE_KEY
from nimctl.server.http_errors import openai_error
from nimctl.server.limits import RefusedError, client_key
from nimctl.server.proxy import HOP_BY_HOP_RAW
from nimctl.server.state import CLIENT_GONE

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

    from nimctl.server.auth import KeyCheck
    from nimctl.server.inference import InferenceRelay
    from nimctl.server.limits import RequestLimits
    from nimctl.server.metrics import FrontMetrics
    from nimctl.server.state import ServerState

log = logging.getLogger("nimctl.server")


class _Head(NamedTuple):
    """What the one pass over a request's headers found."""

    declared: int | None  # Content-Length, when given
    size: int  # all header bytes, as on the wire
    forward: bytes  # the header lines the engine gets


class _BodyNotReceivedError(Exception):
    """The client went away before its body arrived: nobody is left to answer."""


class LeanRelay:
    def __init__(
        self,
        *,
        paths: frozenset[str],
        state: ServerState,
        metrics: FrontMetrics,
        keys: KeyCheck,
        limits: RequestLimits,
        relay: InferenceRelay,
        cors: bool,
    ) -> None:
        self.paths = paths
        self.state = state
        self.metrics = metrics
        self.keys = keys
        self.limits = limits
        self.relay = relay
        self.cors = cors

    def takes(self, scope: Scope) -> bool:
        return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer one request of :meth:`takes`; False, having done nothing, for one it leaves to
        the framework (an Origin header with CORS configured)."""
        authorization = origin = None
        declared: int | None = None
        header_bytes = 0
        forward: list[bytes] = []
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value) + 4  # ": " and CRLF, as on the wire
            if name == b"authorization":
                if authorization is None:  # the first, as the key middleware reads it
                    authorization = value
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else None
            elif name == b"origin":
                origin = value
            if name not in HOP_BY_HOP_RAW:
                forward += (name, b": ", value, b"\r\n")
        if origin is not None and self.cors:
            return False
        if self.keys.active:
            identity = self.keys.identify(authorization)
            if identity is None:
                await self.keys.refuse(scope, authorization, send)
                return True
            scope[SCOPE_KEY] = identity
        await self._answer(scope, receive, send, _Head(declared, header_bytes, b"".join(forward)))
        return True

    async def _answer(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        metrics = self.metrics
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_watching(message: Message) -> None:
            nonlocal status, response_started
            if not response_started:
                status = message["status"]
                response_started = True
            await send(message)

        idle = self.state.idle
        idle.begin()  # every request here is inference: it counts as use (server/idle.py)
        metrics.in_flight.inc()
        try:
            if self.state.draining:
                response = openai_error(503, "server is shutting down", headers={"Connection": "close"})
                await response(scope, receive, send_watching)
                return
            await self._limited(scope, receive, send_watching, head)
        except RefusedError as refusal:
            if not response_started:
                response = openai_error(refusal.status, str(refusal), headers=refusal.headers)
                await response(scope, receive, send_watching)
        except _BodyNotReceivedError:
            status = CLIENT_GONE.status  # nobody to answer; for the metrics only
        except Exception:
            if response_started:
                raise  # too late for an error body: the server logs it and drops the connection
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            response = openai_error(500, "internal server error in the front (see its log)")
            await response(scope, receive, send_watching)
        finally:
            idle.end()
            metrics.in_flight.dec()
            metrics.observe(scope["path"], "POST", status, started)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, head: _Head) -> None:
        limits = self.limits
        limits.check_headers(head.declared, head.size)
        if (refusal := self.relay.proxy.not_ready()) is not None:
            await refusal(scope, receive, send)  # before the body is read, as the framework's route does
            return
        await limits.admit(client_key(scope))
        try:
            guarded = limits.guarded(receive)
            body = await _read_body(guarded)
            target = scope["path"]
            if scope["query_string"]:
                target += "?" + scope["query_string"].decode("latin-1")
            response = await self.relay.answer("POST", target, head.forward, body, guarded)
            await response(scope, guarded, send)
        finally:
            limits.release()


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    if message["type"] != "http.request":
        raise _BodyNotReceivedError
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body  # the usual case: one message, no copy
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _BodyNotReceivedError
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
