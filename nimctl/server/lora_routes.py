"""vLLM's runtime LoRA routes, answered by the front: ``/v1/load_lora_adapter`` and
``/v1/unload_lora_adapter``, with vLLM's request bodies.

Off unless the server was started with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` true, vLLM's own
switch (then 403, saying so): a path sent here is read on the server's file system. The front
checks the adapter as it checks the folder's (:mod:`nimctl.lora.folder`) before the engine sees it,
and keeps the list that ``/v1/metadata`` shows. Behind the API key like every route but health.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from nimctl import contract
from nimctl.lora.folder import AdapterError
from nimctl.server.adapters import AdapterConflictError, AdapterManager, EngineLoadError
from nimctl.server.http_errors import LORA_UPDATE_ERRORS, error_responses, openai_error
from nimctl.server.request_checks import BadRequestError, parse_object
from nimctl.server.state import ServerState

_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
    }
}


def _text_field(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequestError(f"'{name}' must be a non-empty string", param=name)
    return value.strip()


Update = Callable[[AdapterManager, dict[str, Any]], Awaitable[dict[str, Any]]]


def build_router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["lora"])

    def refusal() -> Response | None:
        if state.adapters is None:
            return openai_error(400, f"LoRA is off: this server was started without {contract.PEFT_SOURCE}")
        if not state.adapters.settings.runtime_updates:
            return openai_error(
                403,
                "runtime LoRA updates are off on this server; start it with "
                f"{contract.ALLOW_LORA_UPDATES}=true, or add adapters to {contract.PEFT_SOURCE} "
                f"with {contract.PEFT_REFRESH_INTERVAL} set",
            )
        if not state.ready:
            return openai_error(503, state.message, headers={"Retry-After": "5"})
        return None

    async def answer(request: Request, update: Update) -> Response:
        """Run ``update`` on the adapters with the request's body; its errors as 4xx answers."""
        if (refused := refusal()) is not None:
            return refused
        assert state.adapters is not None
        try:
            body = await update(state.adapters, parse_object(await request.body()))
        except BadRequestError as exc:
            return openai_error(400, str(exc), param=exc.param)
        except AdapterError as exc:
            return openai_error(400, f"LoRA adapter not loaded: {exc}", param="lora_path")
        except AdapterConflictError as exc:
            return openai_error(exc.status, str(exc), param="lora_name")
        except EngineLoadError as exc:  # the engine's trouble, not the adapter's: try again later
            return openai_error(503, str(exc), headers={"Retry-After": "5"})
        return JSONResponse({"object": "lora.adapter", **body})

    @router.post(
        "/v1/load_lora_adapter",
        openapi_extra=_BODY,
        responses=error_responses(*LORA_UPDATE_ERRORS),
        summary="Load a LoRA adapter from a folder on the server (vLLM's route; off by default)",
    )
    async def load(request: Request) -> Response:
        async def update(adapters: AdapterManager, payload: dict[str, Any]) -> dict[str, Any]:
            name = _text_field(payload, "lora_name")
            adapter = await adapters.load(name, Path(_text_field(payload, "lora_path")))
            return {**adapter.to_dict(), "origin": "runtime"}

        return await answer(request, update)

    @router.post(
        "/v1/unload_lora_adapter",
        openapi_extra=_BODY,
        responses=error_responses(*LORA_UPDATE_ERRORS),
        summary="Unload a LoRA adapter, now or after its requests in flight (vLLM's route; off by default)",
    )
    async def unload(request: Request) -> Response:
        async def update(adapters: AdapterManager, payload: dict[str, Any]) -> dict[str, Any]:
            name = _text_field(payload, "lora_name")
            # False: requests on it are still in flight; it is unloaded after the last one ends.
            unloaded = await adapters.unload(name)
            return {"name": name, "unloaded": unloaded, "unloading": not unloaded}

        return await answer(request, update)

    return router
