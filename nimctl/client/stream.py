"""A streamed chat reply: server-sent events read as typed chunks, closed however it ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nimctl._httpx import httpx
from nimctl.client.answers import parse_answer
from nimctl.client.errors import error_from_body, map_transport_error
from nimctl.errors import UnreadableAnswerError

if TYPE_CHECKING:
    from nimctl.client.types import ChatCompletionChunk


class ChatStream:
    """The chunks of one streamed reply; see :meth:`nimctl.client.NimClient.chat_stream`.

    Closing it (or leaving its ``with`` block, or stopping the iteration) closes the
    connection, which makes the server abort the generation.
    """

    def __init__(self, response: httpx.Response, base_url: str, path: str) -> None:
        self._response = response
        self._base_url = base_url
        self._path = path

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._response.close()

    @property
    def closed(self) -> bool:
        return self._response.is_closed

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        from nimctl.client.types import ChatCompletionChunk

        try:
            for line in self._response.iter_lines():
                if not line.startswith("data:"):
                    continue  # SSE comments, event names and blank separators
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                try:
                    body = json.loads(data)
                except ValueError:
                    raise UnreadableAnswerError(
                        f"the server sent a stream frame that is not JSON: {data[:200]!r}"
                    ) from None
                if isinstance(body, dict) and "error" in body:
                    # vLLM reports an error found mid-stream as a `data: {"error": ...}` frame.
                    raise error_from_body(body, self._path)
                yield parse_answer(ChatCompletionChunk, body, self._path)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, self._base_url, self._path, mid_stream=True) from None
        finally:
            self.close()
