"""The FastAPI front: NIM's management endpoints plus the relayed inference routes; 404 elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from nimctl import __version__
from nimctl.server import inference, lora_routes, management
from nimctl.server.adapters import AdapterManager
from nimctl.server.auth import ApiKeyMiddleware, key_check
from nimctl.server.http_errors import openai_error
from nimctl.server.idle import IdleStop
from nimctl.server.lean_relay import LeanRelay
from nimctl.server.limits import LimitsMiddleware, RequestLimits
from nimctl.server.metrics import FrontMetrics
from nimctl.server.middleware import FrontMiddleware
from nimctl.server.proxy import EngineProxy
from nimctl.server.state import ServerState
from nimctl.server.supervisor import Supervisor
from nimctl.server.token_rates import FETCH_TIMEOUT_S, engine_fetch


class _CORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight in OpenAI's error shape (it answers plain text)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        headers = {
            k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")
        }
        return openai_error(400, bytes(response.body).decode(), headers=headers)


class Front(FastAPI):
    """The FastAPI app, with the relayed inference routes answered by the lean path when it is on."""

    lean: LeanRelay | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lean = self.lean
        if lean is not None and lean.takes(scope) and await lean(scope, receive, send):
            return
        await super().__call__(scope, receive, send)


def create_app(
    state: ServerState,
    *,
    request_exit: Callable[[int], None] = lambda code: None,
    supervise: bool = True,
) -> Front:
    """Build the front. ``supervise=False`` starts no engine: the caller runs one (or a stand-in)."""
    metrics = FrontMetrics(state)
    proxy = EngineProxy(state)
    if state.plan.lora is not None:
        state.adapters = AdapterManager(state.plan.lora, proxy)
    supervisor = Supervisor(state, proxy, request_exit)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watchers: list[asyncio.Task[None]] = []
        if supervise:
            supervisor.start()  # in the background: the port answers before the model loads
            watchers = _start_watchers(state, proxy, request_exit)
        try:
            yield
        finally:
            for task in watchers:
                task.cancel()
            for task in watchers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if supervise:
                await supervisor.stop(state.plan.config.shutdown_timeout)
            if state.adapters is not None:
                await state.adapters.aclose()
            await proxy.aclose()

    app = Front(
        title="nimctl NIM server",
        version=__version__,
        description="NIM management endpoints and OpenAI-compatible inference relayed to vLLM.",
        lifespan=lifespan,
        redoc_url=None,
        # Only configured paths answer: `/v1/health/live/` is a 404, not a redirect to the route.
        redirect_slashes=False,
    )
    app.include_router(management.build_router(state, metrics, proxy))
    inference_router, relay = inference.build_router(proxy)
    app.include_router(inference_router)
    app.include_router(lora_routes.build_router(state))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = "Not Found: no such endpoint" if exc.status_code == 404 else str(exc.detail)
        # exc.headers carries a 405's Allow: which methods the path does answer.
        return openai_error(
            exc.status_code, f"{message} ({request.method} {request.url.path})", headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        param = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or None
        return openai_error(400, str(first.get("msg")), param=param)

    routes = {route.path for route in app.routes if isinstance(route, APIRoute)}
    config = state.plan.config
    keys = key_check(config)
    limits = RequestLimits(config)  # one set of slots and rate buckets for both paths
    # Inside FrontMiddleware, so a refusal counts in the metrics; inside auth, which names the caller.
    app.add_middleware(LimitsMiddleware, config=config, limited_paths=inference.LIMITED_PATHS, limits=limits)
    app.add_middleware(
        FrontMiddleware, state=state, metrics=metrics, routes=routes, use_paths=inference.LIMITED_PATHS
    )
    # Added last, so outermost: a request without a key costs one hash and never reaches the rest.
    app.add_middleware(ApiKeyMiddleware, check=keys)
    if config.front_data_path == "lean":
        app.lean = LeanRelay(
            paths=inference.RELAYED_PATHS,
            state=state,
            metrics=metrics,
            keys=keys,
            limits=limits,
            relay=relay,
            cors=bool(config.cors_allow_origins),
        )
    if config.cors_allow_origins:
        # Outermost: a browser's preflight carries no key and must be answered before auth.
        app.add_middleware(
            _CORSMiddleware,
            allow_origins=config.cors_allow_origins,
            allow_methods=config.cors_allow_methods,
            allow_headers=config.cors_allow_headers,
            allow_credentials=config.cors_allow_credentials,
        )
    return app


def _start_watchers(
    state: ServerState, proxy: EngineProxy, request_exit: Callable[[int], None]
) -> list[asyncio.Task[None]]:
    """The front's background tasks beside the supervisor: the token-rate sampler, and the idle
    stop when NIMCTL_IDLE_STOP sets one. The lifespan cancels them before the engine stops."""

    async def get_text(path: str) -> str | None:
        return await proxy.get_text(path, timeout=FETCH_TIMEOUT_S)

    sampler = state.token_rates.sample_forever(engine_fetch(get_text), lambda: state.ready)
    tasks = [asyncio.create_task(sampler, name="token-rates")]
    interval = state.plan.config.idle_stop
    if interval is not None:
        tasks.append(asyncio.create_task(IdleStop(state, interval, request_exit).run(), name="idle-stop"))
    return tasks
