"""The lean engine client (nimctl/server/engine_client.py) keeps the aiohttp relay's connection
behaviours, against the same stand-in engine as tests/server/test_faults.py."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from nimctl.server.engine_client import READ_HIGH_WATER, STALE_RETRIES, EngineClient, header_block
from tests.server.test_faults import StandIn

HEADERS = header_block([(b"content-type", b"application/json")])


async def _statuses(client: EngineClient, count: int) -> list[int]:
    statuses = []
    for n in range(count):
        response = await client.request("POST", "/render", HEADERS, json.dumps({"n": n}).encode())
        body = json.loads(await response.read())
        assert body == {"status": response.status}
        response.finish()
        statuses.append(response.status)
    return statuses


async def _three_statuses(stand_in: StandIn) -> list[int]:
    client = EngineClient("127.0.0.1", await stand_in.start())
    try:
        return await _statuses(client, 3)
    finally:
        client.close()


def test_a_request_that_meets_a_closed_connection_is_sent_again_on_a_new_one() -> None:
    stand_in = StandIn(lambda connection, request: 200 if (connection, request) != (1, 1) else None)
    assert asyncio.run(_three_statuses(stand_in)) == [200, 200, 200]
    assert stand_in.connections == 2


def test_retries_are_bounded_when_every_connection_closes() -> None:
    stand_in = StandIn(lambda connection, request: None)

    async def scenario() -> None:
        client = EngineClient("127.0.0.1", await stand_in.start())
        try:
            await client.request("POST", "/render", HEADERS, b"{}")
        finally:
            client.close()

    with pytest.raises(aiohttp.ServerDisconnectedError):
        asyncio.run(scenario())
    assert stand_in.connections == STALE_RETRIES + 1


def test_a_connection_that_carried_a_5xx_is_not_used_again() -> None:
    stand_in = StandIn(lambda connection, request: 500 if connection == 1 else 200)
    assert asyncio.run(_three_statuses(stand_in)) == [500, 200, 200]
    assert stand_in.connections == 2  # a new one after the 500, then that one is pooled


def test_a_refused_connection_is_a_client_connection_error() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await EngineClient("127.0.0.1", port).request("POST", "/x", b"", b"")

    with pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(scenario())


def test_a_stream_is_read_as_it_comes_and_dropping_it_closes_the_connection() -> None:
    """The second event is sent only after the client has the first; the client then drops the
    answer unread, which must close the connection (vLLM aborts a request on a closed one)."""
    first_read = asyncio.Event()
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        event = b"data: {}\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await first_read.wait()
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await reader.read()  # the request's body, then EOF: returns once the client closed its side
        closed.set()
        writer.close()

    async def scenario() -> list[bytes]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        client = EngineClient("127.0.0.1", server.sockets[0].getsockname()[1])
        response = await client.request("POST", "/v1/chat/completions", HEADERS, b"{}")
        assert (response.status, response.content_type) == (200, "text/event-stream")
        chunks = response.chunks()
        got = [await anext(chunks)]
        first_read.set()
        got.append(await anext(chunks))
        response.finish()  # before the end of the answer
        await asyncio.wait_for(closed.wait(), 10)
        server.close()
        return got

    assert asyncio.run(scenario()) == [b"data: {}\n\n", b"data: {}\n\n"]


def test_an_interim_100_continue_is_skipped_for_the_answer_after_it() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"ok": true}'
        writer.write(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
        writer.close()

    async def scenario() -> tuple[int, str, bytes]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        client = EngineClient("127.0.0.1", server.sockets[0].getsockname()[1])
        response = await client.request("POST", "/v1/completions", HEADERS, b"{}")
        answer = (response.status, response.content_type, await response.read())
        response.finish()
        server.close()
        return answer

    assert asyncio.run(scenario()) == (200, "application/json", b'{"ok": true}')


def test_a_reader_that_falls_behind_stops_the_reading_from_the_engine() -> None:
    """What the engine sends while nobody reads is held up to about READ_HIGH_WATER, not whole."""
    total = 8 * READ_HIGH_WATER

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % total
        )
        event = b"data: " + b"x" * 4090 + b"\n\n"
        for _ in range(total // len(event)):
            writer.write(event)
        writer.write(b"y" * (total % len(event)))
        await writer.drain()
        writer.close()

    async def scenario() -> tuple[int, int]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        client = EngineClient("127.0.0.1", server.sockets[0].getsockname()[1])
        response = await client.request("POST", "/v1/chat/completions", HEADERS, b"{}")
        await asyncio.sleep(0.5)  # the client does not read: the engine's bytes pile up
        held = response._connection.buffered
        received = sum([len(chunk) async for chunk in response.chunks()])
        response.finish()
        server.close()
        return held, received

    held, received = asyncio.run(scenario())
    assert held <= 2 * READ_HIGH_WATER, held
    assert received == total
