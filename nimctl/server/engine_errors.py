"""Whose fault an engine's 5xx is: the client's input (a 400) or the engine's (a 502).

vLLM answers some bad input with a 500: exceptions it does not expect from a request,
raised while it loads the request's media or reads its fields. The front's own checks
(:mod:`nimctl.server.request_checks`) catch the known shapes first; this is the second line,
for what gets past them. Only messages that name the input as the cause are turned into a
400; any other engine 500 is a 502 that carries the engine's message, and the engine's
other 5xx answers (503: overloaded, shutting down) pass through.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import Response

from nimctl import contract
from nimctl.server.http_errors import openai_error
from nimctl.server.request_checks import CheckedBody

# A fetch the engine gave up on: aiohttp's connection errors (a timeout's message is empty).
_FETCH_FAILURES = ("Cannot connect to host", "Server disconnected", "Connection ", "Response payload")
# Python's own words for a value of the wrong type: the request had a field of the wrong JSON type.
_WRONG_TYPE = re.compile(
    r"'(int|float|str|bool|list|dict|NoneType)' object (has no attribute|is not (subscriptable|iterable))"
    r"|unhashable type|argument must be|must be (str|int|a string|an integer)"
)
_IMAGE_TOO_LARGE = ("decompression bomb", "pixels. Set VLLM_MAX_IMAGE_PIXELS")


def judge_engine_error(status: int, body: Any, checked: CheckedBody) -> Response | None:
    """The front's answer for an engine answer of ``status`` with ``body``; None: pass it on."""
    if status < 500:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    message = message if isinstance(message, str) else ""
    if (refusal := _clients_fault(message, checked)) is not None:
        return refusal
    if status != 500:
        return None  # 503 and friends say something true about the engine: passed on
    reason = message or "no message (see the server log)"
    return openai_error(502, f"the engine failed on this request: {reason}")


def _clients_fault(message: str, checked: CheckedBody) -> Response | None:
    if "Cannot load local files" in message:
        return openai_error(400, "media URLs must be https:// or data:, not local files", param="messages")
    if any(marker in message for marker in _IMAGE_TOO_LARGE):
        limit = contract.MAX_IMAGE_PIXELS
        return openai_error(
            400, f"an image is too large ({limit} sets the limit): {message}", param="messages"
        )
    if checked.remote_urls and _is_fetch_failure(message, checked.remote_urls):
        named = [url for url in checked.remote_urls if url in message]
        urls = named or checked.remote_urls
        which = f"the image at {urls[0]}" if len(urls) == 1 else f"one of the images at {', '.join(urls)}"
        reason = message or "no answer in time"
        return openai_error(400, f"{which} could not be fetched: {reason}", param="messages")
    if "Failed to apply prompt replacement" in message:
        # The chat template left out or moved an image's placeholder (an image in a message of a
        # role the template renders as plain text, say): the request's own structure did it.
        return openai_error(
            400,
            f"the chat template did not place every image of the request in the prompt ({message})",
            param="messages",
        )
    if _WRONG_TYPE.search(message):
        return openai_error(400, f"a field of the request has the wrong JSON type (the engine: {message})")
    return None


def _is_fetch_failure(message: str, urls: list[str]) -> bool:
    if not message or message.startswith(_FETCH_FAILURES):
        return True
    return any(url in message for url in urls)
