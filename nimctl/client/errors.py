"""From HTTP failures to nimctl's exceptions, with the server's own message and a hint.

The server speaks OpenAI's error shape ``{"error": {"message", "type", "param", "code"}}``;
vLLM and proxies in between may answer ``{"error": "Unauthorized"}``,
``{"detail": "Not Found"}`` or ``{"object": "error", "message": ...}``: all are understood.
"""

from __future__ import annotations

from typing import Any

from nimctl._httpx import httpx
from nimctl.errors import (
    ClientError,
    HTTPStatusError,
    RequestRejectedError,
    ServerFailedError,
    ServerNotReadyError,
    ServerUnreachableError,
    WaitTimeoutError,
)

_START_HINT = "start a server with `nimctl run`, or point at one with --url or NIMCTL_URL"


def map_transport_error(
    exc: httpx.HTTPError, base_url: str, path: str, *, mid_stream: bool = False
) -> ClientError:
    """A failure below HTTP (no status): connection, timeout, protocol."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        # Nothing accepted the connection: a wrong or filtered address, not a slow server.
        return ServerUnreachableError(
            f"cannot reach the server at {base_url} (no answer to the connection in time)",
            hint="check the address and port (a firewall may drop the packets); " + _START_HINT,
        )
    if isinstance(exc, httpx.TimeoutException):
        what = {
            httpx.PoolTimeout: "waiting for a connection to",
            httpx.WriteTimeout: "sending to",
        }.get(type(exc), "waiting for an answer from")
        return WaitTimeoutError(
            f"timed out {what} {base_url}{path}",
            hint="the server may be overloaded or hung; raise the limit with --timeout or NIMCTL_TIMEOUT",
        )
    if isinstance(exc, httpx.ConnectError):
        return ServerUnreachableError(f"cannot reach the server at {base_url} ({reason})", hint=_START_HINT)
    if mid_stream:
        return ServerFailedError(
            f"the server broke off the reply from {path} ({reason})",
            status=0,
            hint="look at the server's logs: the engine may have stopped",
        )
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return ServerUnreachableError(
            f"{base_url} did not answer {path} as an HTTP server would ({reason})",
            hint="is --url the server's HTTP port? " + _START_HINT,
        )
    return ServerUnreachableError(f"request to {base_url}{path} failed ({reason})", hint=_START_HINT)


def parse_error_body(body: Any) -> tuple[str | None, str | None]:
    """``(message, error_type)`` from any of the error shapes servers use."""
    if not isinstance(body, dict):
        return (body.strip() or None, None) if isinstance(body, str) else (None, None)
    error = body.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        return (str(message) if message is not None else None, error.get("type"))
    if isinstance(error, str):
        return error, None
    if isinstance(body.get("message"), str):
        return body["message"], body.get("type")
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail, None
    if isinstance(detail, list):  # FastAPI validation errors
        parts = [str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail]
        return "; ".join(parts) or None, "validation_error"
    return None, None


def error_for_status(
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    body: Any = None,
    not_found_hint: str | None = None,
) -> HTTPStatusError | ServerNotReadyError:
    if status == 503:
        return ServerNotReadyError(
            f"the server is not ready: {message}",
            server_message=message,  # what `health` shows as the state
            hint="wait for it with `nimctl health --wait`",
        )
    if 400 <= status < 500:
        return RequestRejectedError(
            message, status=status, error_type=error_type, body=body, hint=_hint_4xx(status, not_found_hint)
        )
    return ServerFailedError(
        message,
        status=status,
        error_type=error_type,
        body=body,
        hint="the server failed on this request; look at its logs (`nimctl logs`) and retry",
    )


def _hint_4xx(status: int, not_found_hint: str | None) -> str:
    if status in (401, 403):
        return "the server wants an API key: pass --api-key or set NIMCTL_API_KEY"
    if status == 404 and not_found_hint:
        return not_found_hint
    if status == 413:
        return "the request is too large for the server: send a smaller prompt or image"
    if status == 429:
        return "the server is busy; retry in a moment"
    return "the server refused the request as it was sent; check the arguments"


def error_body(response: httpx.Response) -> Any:
    """An error response's body (read already): its JSON, else the start of its text."""
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def raise_for_status(response: httpx.Response, path: str, *, not_found_hint: str | None = None) -> None:
    """Raise the exception for an error response (its body must have been read)."""
    body = error_body(response)
    message, error_type = parse_error_body(body)
    status = response.status_code
    message = message or f"{path} answered HTTP {status} {response.reason_phrase}".rstrip()
    raise error_for_status(status, message, error_type=error_type, body=body, not_found_hint=not_found_hint)


def error_from_body(body: dict[str, Any], path: str) -> ClientError:
    """The exception for an error object met inside a stream (no HTTP status of its own)."""
    message, error_type = parse_error_body(body)
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    return error_for_status(
        status,
        message or f"the server reported an error in the middle of its reply from {path}",
        error_type=error_type,
        body=body,
    )
