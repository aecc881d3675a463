"""The group's join connection, leader and workers in one event loop on loopback (no engine)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest

from nimctl.errors import ConfigError, WaitTimeoutError
from nimctl.server import membership
from nimctl.server.membership import GroupLeader, Hello, join


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(coro: Callable[[], object]) -> object:
    return asyncio.run(asyncio.wait_for(coro(), 20))  # type: ignore[arg-type]


async def leader_of(nodes: int, profile: str | None = "p1") -> tuple[GroupLeader, int, list[tuple[int, str]]]:
    lost: list[tuple[int, str]] = []
    leader = GroupLeader(nodes, profile, on_lost=lambda rank, why: lost.append((rank, why)))
    port = free_port()
    await leader.start("127.0.0.1", port)
    return leader, port, lost


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_workers_join_and_are_counted() -> None:
    async def scenario() -> None:
        leader, port, _ = await leader_of(3)
        assert leader.status() == "waiting for workers: 1 of 3 joined"
        first = await join("127.0.0.1", port, Hello(1, 3, "p1"), wait=5)
        assert leader.status() == "waiting for workers: 2 of 3 joined" and not leader.complete
        second = await join("127.0.0.1", port, Hello(2, 3, "p1"), wait=5)
        await until(lambda: leader.complete)
        assert (first.leader_ip, first.node_ip) == ("127.0.0.1", "127.0.0.1")
        await leader.close("done")
        for member in (first, second):
            ended = await member.hold()
            assert ended.bye and ended.why == "done"

    run(scenario)


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        (Hello(1, 3, "p1"), "NIM_NUM_COMPUTE_NODES=3, the leader 2"),
        (Hello(2, 2, "p1"), "NIM_NODE_RANK=2 is not a worker's rank in a group of 2"),
        (Hello(1, 2, "other"), "profile other, the leader p1"),
    ],
)
def test_a_worker_that_does_not_fit_is_refused_with_the_reason(hello: Hello, reason: str) -> None:
    async def scenario() -> None:
        leader, port, lost = await leader_of(2)
        with pytest.raises(ConfigError, match="the leader refused this node") as caught:
            await join("127.0.0.1", port, hello, wait=5)
        assert reason in caught.value.message
        assert not leader.joined and not lost
        await leader.close("done")

    run(scenario)


def test_a_second_worker_with_the_same_rank_is_refused() -> None:
    async def scenario() -> None:
        leader, port, _ = await leader_of(3)
        first = await join("127.0.0.1", port, Hello(1, 3, "p1"), wait=5)
        with pytest.raises(ConfigError, match="node 1 has joined already"):
            await join("127.0.0.1", port, Hello(1, 3, "p1"), wait=5)
        await leader.close("done")
        await first.hold()

    run(scenario)


def test_a_leader_that_never_answers_fails_after_the_named_wait() -> None:
    port = free_port()  # nothing listens there

    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError) as caught:
            await join("127.0.0.1", port, Hello(1, 2, "p1"), wait=1.0)
        assert time.monotonic() - started < 4
        assert caught.value.message == f"the leader 127.0.0.1:{port} did not answer within 1 s (NIMCTL_LEADER_WAIT)"

    run(scenario)


def test_a_worker_that_starts_first_waits_for_the_leader() -> None:
    async def scenario() -> None:
        port = free_port()
        joining = asyncio.create_task(join("127.0.0.1", port, Hello(1, 2, "p1"), wait=10))
        await asyncio.sleep(1.2)  # the worker has tried and failed at least once
        leader = GroupLeader(2, "p1", on_lost=lambda rank, why: None)
        await leader.start("127.0.0.1", port)
        member = await joining
        await until(lambda: leader.complete)
        await leader.close("done")
        assert (await member.hold()).bye

    run(scenario)


def test_a_lost_worker_is_reported_and_a_lost_leader_is_not_a_bye() -> None:
    async def scenario() -> None:
        leader, port, lost = await leader_of(2)
        member = await join("127.0.0.1", port, Hello(1, 2, "p1"), wait=5)
        member.writer.transport.abort()  # as a killed process: no goodbye
        await until(lambda: bool(lost))
        assert lost[0][0] == 1 and not leader.joined
        other = await join("127.0.0.1", port, Hello(1, 2, "p1"), wait=5)  # the rank is free again
        await leader.close("failed", bye=False)
        ended = await other.hold()
        assert not ended.bye

    run(scenario)


def test_a_silent_peer_counts_as_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership, "LOST_AFTER_S", 0.5)
    monkeypatch.setattr(membership, "HEARTBEAT_S", 10.0)  # the first beat goes at once, then none

    async def scenario() -> None:
        leader, port, lost = await leader_of(2)
        member = await join("127.0.0.1", port, Hello(1, 2, "p1"), wait=5)  # and never beats again
        await until(lambda: bool(lost), timeout=5)
        assert "no word for 0.5 s" in lost[0][1]
        await leader.close("done")
        member.writer.close()

    run(scenario)


@pytest.mark.parametrize(
    "line",
    [
        b'{"join": {"rank": "1", "nodes": 2, "profile": "p1"}}\n',
        b'{"join": {"rank": true, "nodes": 2, "profile": "p1"}}\n',
        b'{"join": {"rank": 1, "nodes": 2, "profile": 7}}\n',
        b'["not", "a", "join"]\n',
        b"x" * (membership.MAX_LINE + 10) + b"\n",
    ],
)
def test_a_line_that_is_not_a_join_is_dropped_and_counts_nothing(line: bytes) -> None:
    async def scenario() -> None:
        leader, port, lost = await leader_of(2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(line)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without a word
        writer.close()
        assert not leader.joined and not lost
        member = await join("127.0.0.1", port, Hello(1, 2, "p1"), wait=5)  # still takes real ones
        assert leader.complete
        await leader.close("done")
        assert (await member.hold()).bye

    run(scenario)


def test_a_node_address_not_on_this_host_is_a_config_error_at_once() -> None:
    async def scenario() -> None:
        leader, port, _ = await leader_of(2)
        started = time.monotonic()
        with pytest.raises(ConfigError, match="NIM_NODE_ADDRESS=192.0.2.7 is not an address of this host"):
            await join("127.0.0.1", port, Hello(1, 2, "p1"), wait=30, local="192.0.2.7")
        assert time.monotonic() - started < 5
        await leader.close("done")

    run(scenario)
