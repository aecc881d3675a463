"""The OpenAI-compatible routes, relayed to the engine.

The front checks only what it must to keep its promise that bad input is a 4xx: the body
is a JSON object, and inline ``data:`` images decode. Everything else (field types, the
model name, the context length) is the engine's to judge, and its 4xx answers are
passed through unchanged.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import aiohttp
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from nimctl.media import sniff_media_type
from nimctl.server.http_errors import openai_error
from nimctl.server.proxy import EngineProxy, engine_unavailable

_JSON_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
    }
}


class BadRequestError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequestError("request body is not valid JSON: nested too deeply") from None
    if not isinstance(payload, dict):
        raise BadRequestError("request body must be a JSON object")
    return payload


def _check_images(payload: dict[str, Any]) -> None:
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str):
                continue
            if url.startswith("data:"):
                _check_data_url(url, f"messages[{index}].content")
            elif not url.startswith(("http://", "https://")):
                # vLLM answers 500 for file:// and friends; the client's mistake is a 400.
                scheme = url.split(":", 1)[0] if ":" in url else url[:20]
                raise BadRequestError(
                    f"image URL scheme {scheme!r} is not supported: use https:// or data:image/...;base64,",
                    f"messages[{index}].content",
                )


def _check_data_url(url: str, param: str) -> None:
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise BadRequestError("image data URL must look like data:image/png;base64,<data>", param)
    if not header.removeprefix("data:").startswith("image/"):
        media_type = header.removeprefix("data:").split(";")[0]
        raise BadRequestError(f"image data URL has media type {media_type!r}, not image/*", param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("image data URL is not valid base64", param) from None
    if sniff_media_type(raw) is None:
        raise BadRequestError("image data URL does not hold a PNG, JPEG, GIF, WebP or BMP image", param)


def _engine_error(status: int, body: Any, what: str) -> Response:
    """An engine's error answer: passed on when it is in OpenAI's shape, else a 502 that says so."""
    error = body.get("error") if isinstance(body, dict) else None
    if status >= 400 and isinstance(error, dict) and isinstance(error.get("message"), str):
        return JSONResponse(body, status_code=status)
    return openai_error(502, f"the engine answered {what} with HTTP {status} and no error object")


def build_router(proxy: EngineProxy) -> APIRouter:
    router = APIRouter(tags=["inference"])

    async def checked_relay(request: Request, *, images: bool = False) -> Response:
        if (refusal := proxy.not_ready()) is not None:
            return refusal
        body = await request.body()
        try:
            payload = _parse_object(body)
            if images:
                _check_images(payload)
        except BadRequestError as exc:
            return openai_error(400, str(exc), param=exc.param)
        return await proxy.relay(request, body)

    @router.post("/v1/chat/completions", openapi_extra=_JSON_BODY, summary="Chat completion (OpenAI)")
    async def chat_completions(request: Request) -> Response:
        return await checked_relay(request, images=True)

    @router.post("/v1/completions", openapi_extra=_JSON_BODY, summary="Text completion (OpenAI)")
    async def completions(request: Request) -> Response:
        return await checked_relay(request)

    @router.post("/tokenize", openapi_extra=_JSON_BODY, summary="Prompt or messages to token ids")
    async def tokenize(request: Request) -> Response:
        return await checked_relay(request, images=True)

    @router.post("/detokenize", openapi_extra=_JSON_BODY, summary="Token ids to text")
    async def detokenize(request: Request) -> Response:
        return await checked_relay(request)

    @router.get("/v1/models", summary="Models served (OpenAI)")
    async def list_models(request: Request) -> Response:
        return await proxy.relay(request)

    @router.get("/v1/models/{model:path}", summary="One served model (OpenAI)")
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
        summary="The prompt the chat template produces, with its token ids; no inference",
    )
    async def render(request: Request) -> Response:
        if (refusal := proxy.not_ready()) is not None:
            return refusal
        try:
            payload = _parse_object(await request.body())
            _check_images(payload)
        except BadRequestError as exc:
            return openai_error(400, str(exc), param=exc.param)
        try:
            status, rendered = await proxy.call_json("POST", request.url.path, payload)
            if status != 200:
                return _engine_error(status, rendered, "render")
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

    return router
