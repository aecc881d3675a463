"""Streaming chat, the conversation state and its figures, against httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from nimctl.client.conversation import Conversation, ReplyStats
from nimctl.client.http import NimClient
from nimctl.errors import RequestRejectedError, ServerFailedError


class RecordingStream(httpx.SyncByteStream):
    """SSE frames, remembering whether the client closed the response."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.sent = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for frame in self.frames:
            self.sent += 1
            yield frame

    def close(self) -> None:
        self.closed = True


def sse(*pieces: str, usage: dict[str, int] | None = None, done: bool = True) -> list[bytes]:
    frames = [b": keep-alive comment\n\n"]
    for piece in pieces:
        chunk = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": piece}}],
        }
        frames.append(f"data: {json.dumps(chunk)}\n\n".encode())
    if usage is not None:
        frames.append(f"data: {json.dumps({'id': 'c1', 'choices': [], 'usage': usage})}\n\n".encode())
    if done:
        frames.append(b"data: [DONE]\n\n")
    return frames


def streaming_client(stream: RecordingStream, seen: list[dict[str, object]] | None = None) -> NimClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(json.loads(request.content))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    return NimClient("http://nim.test", transport=httpx.MockTransport(handler))


def test_stream_yields_parsed_chunks_and_asks_for_usage() -> None:
    stream = RecordingStream(
        sse("Hel", "lo", usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    )
    seen: list[dict[str, object]] = []
    chunks = list(streaming_client(stream, seen).chat_stream([{"role": "user", "content": "hi"}], model="m"))
    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert seen[0]["stream"] is True and seen[0]["stream_options"] == {"include_usage": True}
    assert stream.closed


def test_stopping_early_closes_the_response() -> None:
    stream = RecordingStream(sse("a", "b", "c", "d"))
    chat = streaming_client(stream).chat_stream([{"role": "user", "content": "hi"}], model="m")
    iterator = iter(chat)
    assert next(iterator).text == "a"
    iterator.close()
    assert stream.closed and chat.closed
    assert stream.sent < len(stream.frames)


def test_with_block_closes_an_unread_stream() -> None:
    stream = RecordingStream(sse("a"))
    with streaming_client(stream).chat_stream([{"role": "user", "content": "hi"}], model="m"):
        pass
    assert stream.closed


def test_error_before_streaming_raises_at_call_time() -> None:
    body = {"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}}
    client = NimClient(
        "http://nim.test", transport=httpx.MockTransport(lambda _: httpx.Response(404, json=body))
    )
    with pytest.raises(RequestRejectedError, match="does not exist"):
        client.chat_stream([{"role": "user", "content": "hi"}], model="x")


def test_error_frame_mid_stream_raises() -> None:
    error = {"error": {"message": "prompt too long", "type": "BadRequestError", "code": 400}}
    stream = RecordingStream([*sse("a", done=False), f"data: {json.dumps(error)}\n\n".encode()])
    with pytest.raises(RequestRejectedError, match="prompt too long"):
        list(streaming_client(stream).chat_stream([{"role": "user", "content": "hi"}], model="m"))
    assert stream.closed


def test_connection_dropped_mid_stream_is_server_failed() -> None:
    class Dropping(RecordingStream):
        def __iter__(self) -> Iterator[bytes]:
            yield from self.frames[:2]
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    stream = Dropping(sse("a", "b"))
    with pytest.raises(ServerFailedError, match="broke off"):
        list(streaming_client(stream).chat_stream([{"role": "user", "content": "hi"}], model="m"))


def test_conversation_keeps_history_and_stats() -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    seen: list[dict[str, object]] = []
    streams = iter([RecordingStream(sse("Hi", "!", usage=usage)), RecordingStream(sse("ok", usage=usage))])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, stream=next(streams))

    client = NimClient("http://nim.test", transport=httpx.MockTransport(handler))
    talk = Conversation(client, "m", system="be brief", params={"max_tokens": 8, "seed": None})
    assert "".join(talk.stream("hello")) == "Hi!"
    assert talk.last_stats is not None and talk.last_stats.completion_tokens == 2
    assert talk.last_stats.ttft_s is not None
    assert "".join(talk.stream("again")) == "ok"
    messages = seen[1]["messages"]
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "again"},
    ]
    assert seen[1]["max_tokens"] == 8 and "seed" not in seen[1]
    talk.clear()
    assert talk.history == [] and talk.system == "be brief"


def test_cancelled_reply_leaves_history_as_before() -> None:
    stream = RecordingStream(sse("a", "b", "c"))
    talk = Conversation(streaming_client(stream), "m")
    pieces = talk.stream("question")
    assert next(pieces) == "a"
    pieces.close()
    assert stream.closed
    assert talk.history == []


def test_image_goes_with_the_next_question_only(tmp_path: pytest.TempPathFactory) -> None:
    png = tmp_path / "x.png"  # type: ignore[operator]
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    seen: list[dict[str, object]] = []
    client = streaming_client(RecordingStream(sse("ok")), seen)
    talk = Conversation(client, "m")
    talk.attach_image(str(png))
    "".join(talk.stream("what is this?"))
    content = seen[0]["messages"][0]["content"]  # type: ignore[index]
    assert content[0]["type"] == "image_url"
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[1] == {"type": "text", "text": "what is this?"}
    assert talk.pending_images == []


def test_stats_rate_and_summary() -> None:
    stats = ReplyStats(total_s=2.0, ttft_s=0.5, prompt_tokens=10, completion_tokens=30)
    assert stats.tokens_per_s == pytest.approx(20.0)
    assert "time to first token 0.500 s" in stats.summary()
    assert "20.0 tokens/s" in stats.summary()
    assert stats.as_dict()["completion_tokens"] == 30
    assert ReplyStats(total_s=1.0).tokens_per_s is None
