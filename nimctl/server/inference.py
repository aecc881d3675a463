"""The OpenAI-compatible routes, relayed to the engine.

The front keeps the promise that the client's mistakes are a 4xx in two lines of defence:
before the engine, it checks the few shapes the engine would answer with a 500
(:mod:`nimctl.server.request_checks`); after it, an engine 500 whose message shows the
client's input as the cause becomes a 400 (:mod:`nimctl.server.engine_errors`), and any
other engine 500 a 502, the engine's failure, not the front's. Everything else (field types,
the model name, the context length) is the engine's to judge, and its 4xx answers are
passed through unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from nimctl.server.engine_errors import judge_engine_error
from nimctl.server.http_errors import (
    INFERENCE_ERRORS,
    MODEL_LIST_ERRORS,
    error_responses,
    openai_error,
)
from nimctl.server.media_fetch import fetch_remote_media
from nimctl.server.proxy import EngineProxy, engine_unavailable, forwardable
from nimctl.server.relayed_stream import RelayedStream
from nimctl.server.request_checks import BadRequestError, BodyLimits, CheckedBody, check_body
from nimctl.server.state import CLIENT_GONE

# The routes relayed as they are (the lean path's, nimctl/server/lean_relay.py).
RELAYED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"})
# The routes that put work on the engine: the concurrency and rate limits apply to these (limits.py).
LIMITED_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize", "/v1/chat/completions/render"}
)

_JSON_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
    }
}
# What the relayed routes answer: JSON, or an event stream when the request asks for one.
_RELAYED_ROUTE: dict[str, Any] = {
    "openapi_extra": _JSON_BODY,
    "responses": {
        200: {
            "description": "The engine's answer",
            "content": {"application/json": {}, "text/event-stream": {}},
        },
        **error_responses(*INFERENCE_ERRORS),
    },
}


def _engine_error(status: int, body: Any, what: str, checked: CheckedBody) -> Response:
    """An engine's error answer: judged when in OpenAI's shape, else a 502 that says so."""
    error = body.get("error") if isinstance(body, dict) else None
    if status >= 400 and isinstance(error, dict) and isinstance(error.get("message"), str):
        return judge_engine_error(status, body, checked) or JSONResponse(body, status_code=status)
    return openai_error(502, f"the engine answered {what} with HTTP {status} and no error object")


# GenerationError's message in vLLM's serving code: the only 500 that carries it is the retryable one.
_RESENDABLE = "Internal server error"


def _engine_error_body(response: Response) -> Any:
    """The JSON of a relayed 5xx answer read whole; None for other answers (a stream began as a 200)."""
    content = getattr(response, "body", None)
    if response.status_code < 500 or not isinstance(content, bytes):
        return None
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return None


def _engine_asks_for_a_resend(response: Response) -> bool:
    """vLLM's answer for a request it ended with finish_reason "error", which it calls retryable: its
    multimodal caches drifted apart (the front-end process kept an image the engine had evicted) and
    the request must be sent again, with its data. The fuzz gate met it about once in 2,000 requests."""
    body = _engine_error_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    return response.status_code == 500 and isinstance(error, dict) and error.get("message") == _RESENDABLE


def _judged(response: Response, checked: CheckedBody) -> Response:
    """A relayed answer, with an engine 5xx judged: the client's fault (400) or the engine's (502)."""
    if response.status_code < 500:
        return response
    return judge_engine_error(response.status_code, _engine_error_body(response), checked) or response


class InferenceRelay:
    """One relayed inference request from its read body to the answer: the checks before the
    engine, the relay, and the judging of the engine's errors after it. Shared by the routes
    below and the lean path (:mod:`nimctl.server.lean_relay`), which answers them in practice."""

    def __init__(self, proxy: EngineProxy) -> None:
        self.proxy = proxy
        self.config = config = proxy.state.plan.config
        self.limits = BodyLimits(
            max_messages=config.max_messages,
            max_content_parts=config.max_content_parts,
            max_tokens=config.max_tokens_cap,
            max_n=config.max_n,
        )

    def check(self, body: bytes) -> CheckedBody:
        # The body was read whole, but no more than NIMCTL_MAX_BODY_BYTES of it (limits.py).
        return check_body(body, max_image_pixels=self.config.max_image_pixels, limits=self.limits)

    async def answer(
        self, method: str, target: str, headers: dict[str, str] | bytes, body: bytes, receive: Receive
    ) -> Response:
        """``headers``: a dict for the aiohttp relay, or the header lines as bytes for the lean
        engine client (:meth:`EngineProxy.forward_lean`)."""
        proxy = self.proxy
        forward: Callable[..., Awaitable[Response]] = (
            proxy.forward_lean if isinstance(headers, bytes) else proxy.forward
        )
        if (refusal := proxy.not_ready()) is not None:
            return refusal
        try:
            # Media URLs become data: URLs fetched under the front's checks: the engine fetches nothing.
            body = await fetch_remote_media(body, self.config)
            checked = self.check(body)
        except BadRequestError as exc:
            return openai_error(400, str(exc), param=exc.param)
        if checked.body is not None:  # rewritten by the checks (NIM's nvext.guided_* translated)
            body = checked.body
        release = None
        if (adapters := proxy.state.adapters) is not None:
            model = checked.payload.get("model")
            if (refused := adapters.refusal(model)) is not None:
                return openai_error(404, refused, param="model")
            release = adapters.claim(model)  # an adapter is unloaded only after its requests end
        try:
            response = await forward(method, target, headers, body, receive)
            if _engine_asks_for_a_resend(response):
                response = await forward(method, target, headers, body, receive)
        except BaseException:
            if release is not None:
                release()
            raise
        final = _judged(response, checked)
        if final is not response and isinstance(response, RelayedStream):
            response.finish()  # a failed stream answered by the front instead: its upstream is done
        if release is not None:
            _release_when_sent(final, release)
        return final


def _release_when_sent(response: Response, release: Callable[[], None]) -> None:
    """Call ``release`` once ``response`` is over: a stream when its last byte is sent, else now."""
    if not isinstance(response, RelayedStream):
        release()
        return
    finish = response.finish

    def finish_then_release() -> None:
        try:
            finish()
        finally:
            release()

    response.finish = finish_then_release


def build_router(proxy: EngineProxy) -> tuple[APIRouter, InferenceRelay]:
    router = APIRouter(tags=["inference"])
    relay = InferenceRelay(proxy)
    check = relay.check

    async def checked_relay(request: Request) -> Response:
        if (refusal := proxy.not_ready()) is not None:
            return refusal
        target = request.url.path + ("?" + request.url.query if request.url.query else "")
        try:
            body = await request.body()
        except ClientDisconnect:
            return Response(status_code=CLIENT_GONE.status)  # nobody to answer; for the metrics only
        return await relay.answer(request.method, target, forwardable(request.headers), body, request.receive)

    @router.post("/v1/chat/completions", summary="Chat completion (OpenAI)", **_RELAYED_ROUTE)
    async def chat_completions(request: Request) -> Response:
        return await checked_relay(request)

    @router.post("/v1/completions", summary="Text completion (OpenAI)", **_RELAYED_ROUTE)
    async def completions(request: Request) -> Response:
        return await checked_relay(request)

    @router.post("/tokenize", summary="Prompt or messages to token ids", **_RELAYED_ROUTE)
    async def tokenize(request: Request) -> Response:
        return await checked_relay(request)

    @router.post("/detokenize", summary="Token ids to text", **_RELAYED_ROUTE)
    async def detokenize(request: Request) -> Response:
        return await checked_relay(request)

    @router.get("/v1/models", responses=error_responses(*MODEL_LIST_ERRORS), summary="Models served (OpenAI)")
    async def list_models(request: Request) -> Response:
        return _judged(await proxy.relay(request), CheckedBody({}))

    @router.get(
        "/v1/models/{model:path}",
        responses=error_responses(404, *MODEL_LIST_ERRORS),
        summary="One served model (OpenAI)",
    )
    async def retrieve_model(model: str) -> Response:
        if (refusal := proxy.not_ready()) is not None:
            return refusal
        try:
            entries = await proxy.list_models(timeout=10)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return engine_unavailable(exc)
        if entries is None:
            return openai_error(502, "the engine's model list could not be read")
        for entry in entries:
            if entry.get("id") == model:
                return JSONResponse(entry)
        return openai_error(404, f"The model `{model}` does not exist.", param="model")

    @router.post(
        "/v1/chat/completions/render",
        openapi_extra=_JSON_BODY,
        responses=error_responses(*INFERENCE_ERRORS),
        summary="The prompt the chat template produces, with its token ids; no inference",
    )
    async def render(request: Request) -> Response:
        if (refusal := proxy.not_ready()) is not None:
            return refusal
        try:
            checked = check(await fetch_remote_media(await request.body(), proxy.state.plan.config))
        except BadRequestError as exc:
            return openai_error(400, str(exc), param=exc.param)
        try:
            status, rendered = await proxy.call_json("POST", request.url.path, checked.payload)
            if status != 200:
                return _engine_error(status, rendered, "render", checked)
            token_ids = rendered.get("token_ids") if isinstance(rendered, dict) else None
            if not isinstance(token_ids, list):
                return openai_error(502, "the engine's render answer has no token_ids list")
            status, text = await proxy.call_json(
                "POST", "/detokenize", {"model": proxy.state.plan.served_name, "tokens": token_ids}
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return engine_unavailable(exc)
        prompt = text.get("prompt") if isinstance(text, dict) else None
        if status != 200 or not isinstance(prompt, str):
            return openai_error(502, "the engine rendered the prompt but could not turn it into text")
        # `prompt` is the front's own field: whatever the engine calls by that name does not replace it.
        return JSONResponse({"prompt": prompt, **{k: v for k, v in rendered.items() if k != "prompt"}})

    return router, relay
