"""Candidate 3 of issue #11: NIM's per-request front work inside vLLM's own API server process.

vLLM's ``--middleware PATH.Class`` adds the class with ``app.add_middleware(Class)`` (no keywords,
vllm/entrypoints/serve/middleware/register.py), last, so it runs outermost of vLLM's user
middleware: everything it refuses never reaches vLLM's routing. Its settings therefore come from
the environment, read once at start through nimctl's own loader (``ServerConfig.from_env``).

Per request it does what nimctl's front does before relaying: the API-key check (nimctl's
``ApiKeyMiddleware`` itself, wrapped around the rest), 404 in OpenAI's shape for every path that
is not NIM's, the body read whole (capped), media URLs fetched under the front's guard, the body
checks that keep engine 500s away, and the front's request metrics. The body is then replayed
to vLLM through a wrapped ``receive``. Per streamed chunk it adds one wrapped ``send`` call that
looks only at ``http.response.start``.

Benchmark only: ``x-nimctl-bench-direct: 1`` skips all of it, so the same process serves the
"direct" path and the difference between the two is this middleware's cost.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from nimctl.server.auth import ApiKeyMiddleware, load_keys
from nimctl.server.config import ServerConfig
from nimctl.server.http_errors import error_body
from nimctl.server.inference import LIMITED_PATHS
from nimctl.server.media_fetch import fetch_remote_media
from nimctl.server.request_checks import BadRequestError, BodyLimits, check_body

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

BYPASS_HEADER = (b"x-nimctl-bench-direct", b"1")
# NIM's paths that vLLM serves under another name: the scope's path is rewritten before routing.
RENAMED = {"/v1/health/ready": "/health", "/v1/metrics": "/metrics"}
LIVE = "/v1/health/live"
# Relayed as they are, with no body to check.
PASSED = frozenset({"/v1/models"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_ROUTES = LIMITED_PATHS | PASSED | set(RENAMED) | {LIVE}

# The default registry: vLLM's /metrics (single API server) serves it, so the front's families
# appear beside vllm:* without a second document. Module level: one set per process.
REQUESTS = Counter(
    "nimctl_http_requests", "Requests answered, by route and status", ["route", "method", "status"]
)
LATENCY = Histogram(
    "nimctl_http_request_duration_seconds",
    "Time from request to the end of the response",
    ["route"],
    buckets=_BUCKETS,
)
IN_FLIGHT = Gauge("nimctl_http_requests_in_flight", "Requests being answered now")


def _json_parts(
    status: int, message: str, param: str | None = None
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps(error_body(status, message, param=param)).encode()
    return body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


async def _answer(send: Send, status: int, parts: tuple[bytes, list[tuple[bytes, bytes]]]) -> None:
    body, headers = parts
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class NimRoutesMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware): streamed bodies and disconnects pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        config = ServerConfig.from_env()
        self.config = config
        self.max_body = config.max_body_bytes
        self.max_image_pixels = config.max_image_pixels
        self.limits = BodyLimits(
            max_messages=config.max_messages,
            max_content_parts=config.max_content_parts,
            max_tokens=config.max_tokens_cap,
            max_n=config.max_n,
        )
        # nimctl's own key check, with the rest of this middleware as its inner app; with no key
        # configured it passes everything on.
        self.checked = ApiKeyMiddleware(
            self._route, keys=load_keys(config), public_metrics=config.public_metrics
        )
        self._live = (
            b'{"object":"health.response","message":"live"}',
            [(b"content-type", b"application/json")],
        )
        self._too_big = _json_parts(413, f"request body over {self.max_body} bytes (NIMCTL_MAX_BODY_BYTES)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for header in scope["headers"]:  # benchmark bypass: vLLM alone, in the same process
            if header == BYPASS_HEADER:
                await self.app(scope, receive, send)
                return
        path: str = scope["path"]
        route = path if path in _ROUTES else "unmatched"  # bounded label cardinality
        started = time.perf_counter()
        status = 500

        async def send_watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.checked(scope, receive, send_watching)
        finally:
            IN_FLIGHT.dec()
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            LATENCY.labels(route).observe(time.perf_counter() - started)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """After the key check: NIM's paths only; inference bodies checked before vLLM sees them."""
        path: str = scope["path"]
        if path in LIMITED_PATHS:
            if scope["method"] != "POST":
                await _answer(send, 405, _json_parts(405, "Method Not Allowed"))
                return
            await self._checked_relay(scope, receive, send)
        elif path == LIVE:
            await _answer(send, 200, self._live)
        elif path in RENAMED:
            scope = dict(scope, path=RENAMED[path], raw_path=RENAMED[path].encode())
            await self.app(scope, receive, send)
        elif path in PASSED:
            await self.app(scope, receive, send)
        else:
            await _answer(send, 404, _json_parts(404, f"no route {path}"))

    async def _checked_relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before its body arrived: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _answer(send, 413, self._too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            # Media URLs become data: URLs under the front's guard (a fast no-op when there are
            # none); then the shapes vLLM would answer with a 500 are refused here as a 400.
            fetched = await fetch_remote_media(body, self.config)
            check_body(fetched, max_image_pixels=self.max_image_pixels, limits=self.limits)
        except BadRequestError as exc:
            await _answer(send, 400, _json_parts(400, str(exc), exc.param))
            return
        if fetched is not body:
            # vLLM reads the body from receive, not Content-Length; the header is kept true anyway.
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            headers.append((b"content-length", str(len(fetched)).encode()))
            scope = dict(scope, headers=headers)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": fetched, "more_body": False}
            return await receive()  # after the body: the real channel, so disconnects still abort

        await self.app(scope, replay, send)
