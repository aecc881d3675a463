"""nimctl's watch over a multi-node group: each worker joins the leader and stays connected.

The engine's traffic goes over vLLM's own runtime (torch.distributed); this connection carries
none of it. It exists because vLLM does not notice a lost node until a request reaches it: a
killed worker left the leader answering "ready" for as long as nobody asked. Over it:

* a worker says who it is (rank, node count, profile); the leader welcomes it or refuses it,
  with the reason, so a misconfigured group fails at start with one clear line;
* both sides send a line every :data:`HEARTBEAT_S` and count the peer gone at end of file or
  after :data:`LOST_AFTER_S` of silence (a killed container's socket may never be closed);
* a leader that stops on purpose says ``bye``, so its workers exit 0 rather than fail.

The protocol is JSON lines over TCP on the leader's ``NIM_LEADER_PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nimctl import contract
from nimctl.errors import ConfigError, WaitTimeoutError

log = logging.getLogger("nimctl.server")

HEARTBEAT_S = 1.0
# Silence that counts as a lost peer: a few beats, with room for a loaded machine's stalls.
LOST_AFTER_S = 5.0
CONNECT_RETRY_S = 1.0
CONNECT_TIMEOUT_S = 5.0
MAX_LINE = 4096


@dataclass(frozen=True)
class Hello:
    """What a worker says when it joins; the leader checks it against its own view of the group."""

    rank: int
    nodes: int
    profile: str | None
    address: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"rank": self.rank, "nodes": self.nodes, "profile": self.profile, "address": self.address}


class Ended(Exception):  # noqa: N818 - a peer's end, not an error of this code
    """The peer is gone; ``bye`` when it said so first (a clean stop)."""

    def __init__(self, why: str, *, bye: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.bye = bye


async def _send(writer: asyncio.StreamWriter, message: dict[str, object]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()


async def _receive(reader: asyncio.StreamReader, timeout: float) -> dict[str, object]:
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        raise Ended(f"no word for {timeout:g} s") from None
    except (OSError, ValueError) as exc:  # reset, unreachable, or a line over MAX_LINE
        raise Ended(f"connection lost ({exc})") from None
    if not line:
        raise Ended("connection closed")
    try:
        message = json.loads(line)
    except ValueError:
        raise Ended("an unreadable line on the join connection") from None
    if not isinstance(message, dict):
        raise Ended("an unreadable line on the join connection")
    return message


async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Ended:
    """Beat and listen until the peer goes; returns why (never raises for the peer's end)."""

    async def beat() -> None:
        while True:
            await _send(writer, {"beat": time.time()})
            await asyncio.sleep(HEARTBEAT_S)

    beater = asyncio.create_task(beat())
    try:
        while True:
            message = await _receive(reader, LOST_AFTER_S)
            if "bye" in message:
                return Ended(str(message["bye"]), bye=True)
            if beater.done():
                raise Ended("connection lost")
    except Ended as ended:
        return ended
    finally:
        beater.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await beater


async def say_bye(writer: asyncio.StreamWriter, why: str) -> None:
    with contextlib.suppress(Exception):
        await _send(writer, {"bye": why})
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)


class GroupLeader:
    """The leader's side: takes the workers' joins, counts them, and reports a worker lost."""

    def __init__(self, nodes: int, profile: str | None, on_lost: Callable[[int, str], None]) -> None:
        self.nodes = nodes
        self.profile = profile
        self.joined: dict[int, str] = {}  # rank -> the worker's address
        self._on_lost = on_lost
        self._server: asyncio.Server | None = None
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._closing = False

    @property
    def complete(self) -> bool:
        return len(self.joined) == self.nodes - 1

    def status(self) -> str:
        return f"waiting for workers: {len(self.joined) + 1} of {self.nodes} joined"

    async def start(self, host: str, port: int) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_LINE)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for workers on {host}:{port}: {exc.strerror}",
                hint=f"set {contract.LEADER_PORT} to a free port (the engine also uses the next one)",
            ) from None
        log.info("waiting for %d worker(s) to join on %s:%d", self.nodes - 1, host, port)

    async def close(self, why: str, *, bye: bool = True) -> None:
        """Stop taking joins and let the workers go: with ``bye`` they exit 0, without it they
        see the connection end, as if the leader were lost, and exit non-zero."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        writers = list(self._writers.values())
        if bye:
            await asyncio.gather(*(say_bye(w, why) for w in writers), return_exceptions=True)
        for writer in writers:
            writer.close()

    def _refusal(self, hello: Hello) -> str | None:
        if hello.nodes != self.nodes:
            return f"the worker has {contract.NUM_COMPUTE_NODES}={hello.nodes}, the leader {self.nodes}"
        if not 1 <= hello.rank < self.nodes:
            return f"{contract.NODE_RANK}={hello.rank} is not a worker's rank in a group of {self.nodes}"
        if hello.rank in self.joined:
            return f"node {hello.rank} has joined already (from {self.joined[hello.rank]})"
        if hello.profile != self.profile:
            return f"the worker runs profile {hello.profile}, the leader {self.profile}"
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        try:
            hello = _hello(await _receive(reader, CONNECT_TIMEOUT_S))
        except Ended:
            hello = None
        if hello is None or self._closing:  # not a worker of ours: say nothing, count nothing
            writer.close()
            return
        problem = self._refusal(hello)
        if problem:
            log.error("refused a worker from %s: %s", address, problem)
            await _refuse(writer, problem)
            return
        self.joined[hello.rank] = address
        self._writers[hello.rank] = writer
        log.info("worker node %d joined from %s (%s)", hello.rank, address, self.status())
        try:
            await _send(writer, {"welcome": {"nodes": self.nodes, "profile": self.profile}})
            ended = await hold(reader, writer)
        except OSError as exc:  # gone before the welcome reached it
            ended = Ended(f"connection lost ({exc})")
        finally:
            self.joined.pop(hello.rank, None)
            self._writers.pop(hello.rank, None)
            writer.close()
        if not self._closing:
            log.error("worker node %d (%s) left the group: %s", hello.rank, address, ended.why)
            self._on_lost(hello.rank, ended.why)


def _hello(message: dict[str, object]) -> Hello | None:
    """A worker's join, if the line is one: ints for rank and count (not bools), a str or no profile."""
    raw = message.get("join")
    if not isinstance(raw, dict):
        return None
    rank, nodes, profile, address = (raw.get(k) for k in ("rank", "nodes", "profile", "address"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rank, nodes)):
        return None
    if not all(v is None or isinstance(v, str) for v in (profile, address)):
        return None
    return Hello(int(rank), int(nodes), profile, address)  # type: ignore[arg-type]


async def _refuse(writer: asyncio.StreamWriter, problem: str) -> None:
    with contextlib.suppress(Exception):
        await _send(writer, {"refused": problem})
        writer.close()


@dataclass
class Membership:
    """A worker's place in the group, once the leader welcomed it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    leader_ip: str  # the leader's address as this node reached it: the engine's master address
    node_ip: str  # this node's address on the way to the leader: what its engine advertises

    async def hold(self) -> Ended:
        return await hold(self.reader, self.writer)

    async def leave(self, why: str) -> None:
        await say_bye(self.writer, why)


async def join(leader: str, port: int, hello: Hello, wait: float, *, local: str | None = None) -> Membership:
    """Join the leader, trying again until ``wait`` seconds have passed (it may still be starting,
    or its name not yet in DNS); a refusal is a ConfigError, no answer a WaitTimeoutError."""
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        # From this node's own address when it has one: the leader sees (and logs) that one.
        source = (local, 0) if local else None
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(leader, port, limit=MAX_LINE, local_addr=source),
                max(0.1, min(CONNECT_TIMEOUT_S, left)),
            )
            await _send(writer, {"join": hello.to_json()})
            # Connected: the leader answers once its loop gets to it; waiting the rest of the wait
            # (not a short timeout) keeps a slow answer from becoming a second join of the same node.
            answer = await _receive(reader, max(CONNECT_TIMEOUT_S, deadline - time.monotonic()))
        except (OSError, TimeoutError, Ended) as exc:
            if writer is not None:
                writer.close()
            if isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL and local:
                raise ConfigError(
                    f"{contract.NODE_ADDRESS}={local} is not an address of this host",
                    hint="give an address of this node's own interfaces, or unset it",
                ) from None
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    f"the leader {leader}:{port} did not answer within {wait:g} s ({contract.LEADER_WAIT})",
                    hint=f"start the leader ({contract.NODE_RANK}=0) first, or check "
                    f"{contract.LEADER_ADDRESS} and {contract.LEADER_PORT}",
                ) from None
            await asyncio.sleep(min(CONNECT_RETRY_S, max(0.0, deadline - time.monotonic())))
            continue
        if "welcome" not in answer:
            writer.close()
            why = answer.get("refused", f"an unexpected answer {answer}")
            raise ConfigError(
                f"the leader refused this node: {why}",
                hint="every node of the group needs the same node count and profile",
            )
        peer = writer.get_extra_info("peername")
        own = writer.get_extra_info("sockname")
        return Membership(reader, writer, leader_ip=str(peer[0]), node_ip=str(own[0]))
