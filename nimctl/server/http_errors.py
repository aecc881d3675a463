"""Error responses in OpenAI's shape, as vLLM gives them: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse

_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    408: "RequestTimeoutError",
    413: "RequestTooLargeError",
    422: "BadRequestError",
    429: "RateLimitError",
    431: "RequestHeaderFieldsTooLargeError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
}


def error_body(status: int, message: str, *, param: str | None = None) -> dict[str, object]:
    error_type = _TYPES.get(status) or HTTPStatus(status).phrase.replace(" ", "") + "Error"
    return {"error": {"message": message, "type": error_type, "param": param, "code": status}}


def openai_error(
    status: int, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param=param), status_code=status, headers=headers)


# The error object as /openapi.json documents it.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["integer", "null"]},
            },
        }
    },
}
# What each error status means on this server, for the document.
_MEANINGS = {
    400: "The request is malformed or names something the model cannot do",
    404: "No such model (or, for /v1/license, no license file)",
    403: "Runtime LoRA updates are off on this server (VLLM_ALLOW_RUNTIME_LORA_UPDATING)",
    405: "Method not allowed (the Allow header lists the allowed ones)",
    408: "The request body did not arrive within the server's deadline (NIMCTL_BODY_TIMEOUT)",
    409: "The LoRA adapter's name is taken, or its folder would bring it back",
    413: "The request body is larger than the server accepts (NIMCTL_MAX_BODY_BYTES)",
    422: "The engine could not use the request's input (for example a media URL that answered 4xx)",
    429: "Too many requests: the concurrency limit or the caller's rate limit; see Retry-After",
    431: "The request's headers are larger than the server accepts (NIMCTL_MAX_HEADER_BYTES)",
    502: "The engine failed on the request, or answered in a way the front cannot read",
    503: "The model is not ready yet, the server is shutting down, or the engine is not answering",
}
# The error statuses of each kind of route: a new status is one entry here and one in _MEANINGS.
INFERENCE_ERRORS = (400, 404, 408, 413, 422, 429, 431, 502, 503)
# Any route: a body or headers over the limits (limits.py) are refused before routing.
_ANY_ROUTE = (413, 431)
MODEL_LIST_ERRORS = (*_ANY_ROUTE, 502, 503)
MANAGEMENT_ERRORS = (*_ANY_ROUTE, 503)  # 503 while the server drains
LORA_UPDATE_ERRORS = (400, 403, 404, 409, *_ANY_ROUTE, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI's ``responses=`` for error answers in OpenAI's shape."""
    return {
        status: {"description": _MEANINGS[status], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for status in statuses
    }
