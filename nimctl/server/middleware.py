"""ASGI middleware: request metrics, the idle clock's inference requests (server/idle.py),
503 for new work while the server drains, and the front's last word on a bug: any exception
a route lets out becomes a JSON 500 in OpenAI's shape, logged once with its traceback
(Starlette alone answers plain text).

Written as plain ASGI (not BaseHTTPMiddleware) so that streamed bodies and client
disconnects pass through untouched.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nimctl.server.http_errors import openai_error
from nimctl.server.metrics import FrontMetrics
from nimctl.server.state import ServerState

log = logging.getLogger("nimctl.server")

# Health and metrics keep answering while draining so orchestrators see the state.
_ALWAYS_ANSWERED = ("/v1/health/", "/v1/metrics")


class FrontMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        state: ServerState,
        metrics: FrontMetrics,
        routes: set[str],
        use_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics
        self.routes = routes
        self.use_paths = use_paths  # inference: what counts as use for the idle stop (server/idle.py)

    def _route(self, path: str) -> str:
        if path in self.routes:
            return path
        if path.startswith("/v1/models/"):
            return "/v1/models/{model}"
        return "unmatched"  # keeps label cardinality bounded whatever clients send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = self._route(path)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_watching(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        use = scope["method"] == "POST" and path in self.use_paths
        if use:
            self.state.idle.begin()
        self.metrics.in_flight.inc()
        try:
            if self.state.draining and not path.startswith(_ALWAYS_ANSWERED):
                response = openai_error(503, "server is shutting down", headers={"Connection": "close"})
                await response(scope, receive, send_watching)
            else:
                try:
                    await self.app(scope, receive, send_watching)
                except Exception:
                    if response_started:
                        raise  # too late for an error body: the server logs it and drops the connection
                    log.exception("unexpected error answering %s %s", scope["method"], path)
                    response = openai_error(500, "internal server error in the front (see its log)")
                    await response(scope, receive, send_watching)
        finally:
            if use:
                self.state.idle.end()
            self.metrics.in_flight.dec()
            self.metrics.observe(route, scope["method"], status, started)
