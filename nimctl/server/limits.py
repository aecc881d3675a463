"""Request limits the front enforces before a request costs the engine anything.

One pure ASGI middleware (no BaseHTTPMiddleware: streamed answers and disconnects pass through
untouched), cheap on the common path: a few integer compares per request and one per body chunk.

- headers: over ``max_header_bytes`` in all, 431 (when uvicorn parses with h11, not httptools, it
  also cuts headers still arriving past that size, with its own plain 400);
- the body: a declared ``Content-Length`` over ``max_body_bytes`` is refused up front; otherwise
  bytes are counted as they arrive and the request is refused once over (413), so no more than the
  limit is ever held, whatever the client declares or streams;
- slow clients: the whole body must arrive within ``body_timeout`` seconds (408);
- inference routes only: an optional per-key token bucket (``rate_limit_rpm``; 429), then at most
  ``max_concurrent_requests`` at once, later ones waiting up to ``queue_timeout`` for a slot (429).

Every refusal is in OpenAI's shape, with ``Connection: close`` where the body may still be coming
(the connection cannot be reused with unread bytes on it), and ``Retry-After`` on a 429.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The ASGI scope key under which the auth middleware leaves the caller's key identity.
from nimctl.server.auth import SCOPE_KEY as KEY_SCOPE
from nimctl.server.config import ServerConfig
from nimctl.server.http_errors import openai_error

# Buckets kept at most; past it, full buckets (keys idle for a minute) are dropped.
_MAX_BUCKETS = 10_000


class RefusedError(Exception):
    """A limit refused the request; the middleware answers ``status`` unless the answer began."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


class RateLimiter:
    """Token buckets per key: ``rpm`` requests a minute, bursts of up to ``rpm``."""

    def __init__(self, rpm: int) -> None:
        self.capacity = float(rpm)
        self.per_second = rpm / 60.0
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)

    def take(self, key: str, now: float | None = None) -> float:
        """0 when the request may go (a token is spent), else the seconds until one is there."""
        now = time.monotonic() if now is None else now
        tokens, stamp = self.buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - stamp) * self.per_second)
        if tokens < 1.0:
            self.buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.per_second
        if key not in self.buckets and len(self.buckets) >= _MAX_BUCKETS:
            self._prune(now)
        self.buckets[key] = (tokens - 1.0, now)
        return 0.0

    def _prune(self, now: float) -> None:
        # A bucket that has refilled says nothing a fresh one would not: forget it.
        full = [k for k, (t, s) in self.buckets.items() if t + (now - s) * self.per_second >= self.capacity]
        for key in full:
            del self.buckets[key]


def read_headers(scope: Scope) -> tuple[int | None, int]:
    """The declared body length (None: not declared) and the headers' size, in one pass."""
    declared = None
    size = 0
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 4  # ": " and CRLF, as on the wire
        if name == b"content-length":
            # The HTTP parser refuses a malformed length; should one get by, it is not ours to judge.
            declared = int(value) if value.isdigit() else None
    return declared, size


def client_key(scope: Scope) -> str:
    key = scope.get(KEY_SCOPE)
    if key:
        return f"key:{key}"
    client = scope.get("client")
    return f"addr:{client[0]}" if client else "addr:?"


class RequestLimits:
    """The limits themselves, shared by :class:`LimitsMiddleware` and the lean inference path
    (:mod:`nimctl.server.lean_relay`)."""

    def __init__(self, config: ServerConfig) -> None:
        self.max_body = config.max_body_bytes
        self.max_headers = config.max_header_bytes
        self.body_timeout = config.body_timeout
        self.queue_timeout = config.queue_timeout
        self.slots = asyncio.Semaphore(config.max_concurrent_requests)
        self.retry_after = str(max(1, math.ceil(config.queue_timeout)))
        self.rate = RateLimiter(config.rate_limit_rpm) if config.rate_limit_rpm else None

    def check_headers(self, declared: int | None, header_bytes: int) -> None:
        """Refuse headers over the limit, or a declared body over it, before anything is read."""
        if header_bytes > self.max_headers:
            raise RefusedError(
                431,
                f"the request's headers are larger than the {self.max_headers} bytes this server "
                "accepts (NIMCTL_MAX_HEADER_BYTES)",
                {"Connection": "close"},
            )
        if declared is not None and declared > self.max_body:
            raise self.too_large()

    async def admit(self, client_key: str) -> None:
        """Take a rate-limit token and a concurrency slot (429 when neither comes); ``release`` after."""
        if self.rate is not None and (wait := self.rate.take(client_key)):
            seconds = str(max(1, math.ceil(wait)))
            raise RefusedError(
                429,
                f"rate limit reached: retry in {seconds} s (NIMCTL_RATE_LIMIT_RPM)",
                {"Retry-After": seconds, "Connection": "close"},
            )
        if self.slots.locked():  # the common case, a free slot, costs no timer
            try:
                async with asyncio.timeout(self.queue_timeout):
                    await self.slots.acquire()
            except TimeoutError:
                raise RefusedError(
                    429,
                    "the server is at its limit of concurrent requests (NIMCTL_MAX_CONCURRENT_REQUESTS): "
                    "retry shortly",
                    {"Retry-After": self.retry_after, "Connection": "close"},
                ) from None
        else:
            await self.slots.acquire()

    def release(self) -> None:
        self.slots.release()

    def too_large(self) -> RefusedError:
        return RefusedError(
            413,
            f"request body is larger than the {self.max_body} bytes this server accepts "
            "(NIMCTL_MAX_BODY_BYTES)",
            {"Connection": "close"},
        )

    def guarded(self, receive: Receive) -> Receive:
        """``receive`` counting body bytes against the limit, with the body's deadline."""
        received = 0
        deadline: float | None = None
        done = False

        async def guarded_receive() -> Message:
            nonlocal received, deadline, done
            if done:
                return await receive()  # after the body: waits for a disconnect are not timed
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.body_timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise self.too_slow() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise self.too_large()
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        return guarded_receive

    def too_slow(self) -> RefusedError:
        return RefusedError(
            408,
            f"the request body did not arrive within {self.body_timeout:g} s (NIMCTL_BODY_TIMEOUT)",
            {"Connection": "close"},
        )


class LimitsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        config: ServerConfig,
        limited_paths: Iterable[str],
        limits: RequestLimits | None = None,
    ) -> None:
        self.app = app
        self.limits = limits or RequestLimits(config)
        self.limited_paths = frozenset(limited_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_watching(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        limits = self.limits
        try:
            declared, header_bytes = read_headers(scope)
            limits.check_headers(declared, header_bytes)
            method = scope["method"]
            if method == "POST" and scope["path"] in self.limited_paths:
                await limits.admit(client_key(scope))
                try:
                    await self.app(scope, limits.guarded(receive), send_watching)
                finally:
                    limits.release()
            elif declared is None and method in ("GET", "HEAD"):
                await self.app(scope, receive, send_watching)  # no body the app would read: no guard
            else:
                await self.app(scope, limits.guarded(receive), send_watching)
        except RefusedError as refusal:
            if response_started:
                return  # too late to answer: ending the call closes the connection
            response = openai_error(refusal.status, str(refusal), headers=refusal.headers)
            await response(scope, receive, send)
