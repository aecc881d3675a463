"""Multi-node groups on one machine (``nimctl run --nodes N``): the members' descriptions, and a
group as one instance for the readiness wait, ``ps``, ``logs`` and ``stop``.

A group is its leader, the instance as ``run`` starts one without ``--nodes`` (its name, its
published port, its key and TLS), and workers ``NAME-node1`` .. ``NAME-node{N-1}``. Every member
is one instance of its runtime, described from the group's spec by the runtime's ``members()``:
the single-node environment plus :func:`nimctl.contract.node_environment`, the same function the
docs' by-hand multi-host commands are written from. Members carry the group's labels (a
container's labels, a host process's state record), so a group is found again from its members.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nimctl import contract
from nimctl.errors import NimctlError, UsageError
from nimctl.runtime.instances import Instance, Stopped
from nimctl.runtime.ports import port_free

if TYPE_CHECKING:
    from nimctl.runtime.base import Handle, InstanceRuntime
    from nimctl.runtime.spec import RunSpec

MAX_NODES = 64  # nim-serve's own bound (ServerConfig.num_compute_nodes)
_STARTING = {"running", "restarting", "created"}
_PORT_TRIES = 200


def member_name(group: str, rank: int) -> str:
    return group if rank == 0 else f"{group}-node{rank}"


def node_tag(rank: int) -> str:
    """How a member's lines are marked in a group's log."""
    return f"[node{rank}] "


def check_nodes(nodes: int) -> int:
    if not 1 <= nodes <= MAX_NODES:
        raise UsageError(
            f"bad --nodes {nodes}: a group has 1 to {MAX_NODES} nodes",
            hint="--nodes 1 (the default) runs one instance; --nodes 2 a leader and a worker",
        )
    return nodes


def local_members(spec: RunSpec) -> list[RunSpec]:
    """Host processes on loopback addresses: the leader on 127.0.0.1, worker r on 127.0.0.(r+1).

    Every 127.0.0.0/8 address reaches this machine (Linux), so each member has an address of
    its own, as on separate hosts. A worker's port answers only its health (liveness and ready);
    the leader's join port is one whose next port is free too (the engine's store takes it).
    """
    if spec.nodes == 1:
        return [spec]
    join = free_port_pair(contract.DEFAULT_LEADER_PORT)
    taken = {spec.port, join, join + contract.ENGINE_MASTER_PORT_OFFSET}
    members = []
    for rank in range(spec.nodes):
        address = f"127.0.0.{rank + 1}"
        env = dict(spec.env)
        port, host = spec.port, spec.host
        if rank:
            port, host = free_port(address, spec.port + rank, taken), address
            taken.add(port)
            env[contract.SERVER_PORT], env[contract.SERVER_HOST] = str(port), host
        env |= contract.node_environment(
            spec.nodes, rank, "127.0.0.1", leader_port=join, node_address=address
        )
        members.append(_member(spec, rank, env, port=port, host=host, address=address))
    return members


def docker_members(spec: RunSpec, cpu_count: int | None = None) -> list[RunSpec]:
    """Containers on the group's own bridge network, each in its own network namespace.

    The leader is reached by its container name (Docker's DNS on a user-defined network); each
    member's own address is left to nim-serve's default, the address that routes to the leader
    (its IP on the network). The CPUs are split evenly with a CFS quota, not pinned: vLLM's CPU
    backend keeps one of the CPUs it sees for itself, so each member must still see them all.
    """
    if spec.nodes == 1:
        return [spec]
    share = round((cpu_count or os.cpu_count() or 1) / spec.nodes, 2)
    members = []
    for rank in range(spec.nodes):
        env = dict(spec.env) | contract.node_environment(spec.nodes, rank, spec.name)
        address = member_name(spec.name, rank)
        members.append(_member(spec, rank, env, network=network_name(spec.name), cpus=share, address=address))
    return members


def network_name(group: str) -> str:
    return f"nimctl-{group}"


def _member(spec: RunSpec, rank: int, env: dict[str, str], **changes: Any) -> RunSpec:
    """The group's spec for one member: a worker publishes nothing, holds no credentials of its
    own (the leader's are the group's) and restarts only with the group."""
    return replace(
        spec,
        name=member_name(spec.name, rank),
        env=env,
        group=spec.name,
        rank=rank,
        publish=rank == 0,
        security=spec.security if rank == 0 else None,
        **changes,
    )


def free_port(host: str, start: int, taken: set[int]) -> int:
    for port in range(max(start, 1024), min(start + _PORT_TRIES, 65536)):
        if port not in taken and port_free(host, port):
            return port
    raise UsageError(f"no free port on {host} from {start} to {start + _PORT_TRIES - 1} for a worker node")


def free_port_pair(start: int) -> int:
    """A port p on every address with p + 1 free too: the leader's join port and the engine's store."""
    offset = contract.ENGINE_MASTER_PORT_OFFSET
    for port in range(start, min(start + _PORT_TRIES, 65535 - offset)):
        if port_free("0.0.0.0", port) and port_free("0.0.0.0", port + offset):
            return port
    raise UsageError(f"no two free ports in a row from {start} for the leader's join and the engine's store")


# --- One group as one instance -------------------------------------------------------------------


def fold(instances: Sequence[Instance]) -> list[Instance]:
    """Each group as one instance (its leader's, with every member in ``members``); others as they are.

    A group whose leader has gone (removed by hand) is still listed, by the group's name, so that
    ``nimctl stop NAME`` can be seen to end its workers.
    """
    groups: dict[str, list[Instance]] = {}
    alone: list[Instance] = []
    for instance in instances:
        if instance.group is None:
            alone.append(instance)
        else:
            groups.setdefault(instance.group, []).append(instance)
    return alone + [as_one(name, members) for name, members in groups.items()]


def as_one(group: str, members: Sequence[Instance]) -> Instance:
    ordered = sorted(members, key=lambda instance: instance.rank)
    leader = ordered[0] if ordered[0].rank == 0 else None
    if leader is None:  # workers without their leader: the group's row says what is left
        first = ordered[0]
        running = next((m for m in ordered if m.running), None)
        leader = replace(
            first, name=group, url="", rank=0, ready=None,
            state=running.state if running else first.state, exit_code=None if running else first.exit_code,
        )  # fmt: skip
    nodes = max([leader.nodes, *(m.rank + 1 for m in ordered)])
    return replace(leader, nodes=nodes, members=[m.as_member() for m in ordered])


def nodes_summary(instance: Instance) -> str:
    """``ps``'s NODES cell: the node count and the workers' states, e.g. ``2 (node1 up)``."""
    if instance.nodes == 1 and not instance.members:
        return "1"
    parts = []
    for member in instance.members:
        if member.rank == 0:
            continue
        state = "up" if member.running else member.state
        if member.exit_code is not None:
            state += f" ({member.exit_code})"
        parts.append(f"node{member.rank} {state}")
    missing = instance.nodes - len(instance.members)
    if missing > 0:
        parts.append(f"{missing} missing")
    return f"{instance.nodes} ({', '.join(parts)})" if parts else str(instance.nodes)


class GroupHandle:
    """A group's members, started or found, as one handle of their runtime.

    The readiness wait sees the group as its leader, except that any member ending ends the
    wait (``ended_member`` names it, and its last lines are what is shown).
    """

    def __init__(self, runtime: InstanceRuntime[Any], name: str, members: Sequence[Handle]) -> None:
        self.runtime = runtime
        self.name = name
        self.members = sorted(members, key=_rank)
        self.leader = next((m for m in self.members if _rank(m) == 0), None)
        self.url = self.leader.url if self.leader is not None else ""
        self.ended_member: str | None = None
        self._ended: Handle | None = None

    def state(self) -> tuple[str, int | None]:
        """The first member that has ended, else the leader's state."""
        for member in self.members:
            state, code = member.state()
            if state not in _STARTING:
                self.ended_member, self._ended = member.name, member
                return state, code
        if self.leader is None:
            return "removed", None
        return self.leader.state()

    def last_lines(self, count: int) -> list[str]:
        """The ended member's last lines (else the leader's), after a few of every other member's:
        why one ended is often in another's log (a worker that lost its leader)."""
        main = self._ended or self.leader or self.members[0]
        lines = []
        if count > 1:
            for member in self.members:
                if member is not main:
                    tag = node_tag(_rank(member))
                    lines += [tag + line for line in member.last_lines(min(count // 3, 10))]
        return lines + [node_tag(_rank(main)) + line for line in main.last_lines(count)]

    def follow(self) -> Iterator[str]:
        """Every member's lines from now on, tagged, until the leader's log ends."""
        return merged([(node_tag(_rank(m)), m.follow) for m in self.members], until=0)

    def logs(self, *, follow: bool, tail: int | None) -> Iterator[str]:
        """Each member's log, tagged: one after the other, or interleaved as written when following."""
        sources = [(node_tag(_rank(m)), _reader(self.runtime, m, follow, tail)) for m in self.members]
        if not follow:
            for tag, read in sources:
                for line in read():
                    yield tag + line
            return
        yield from merged(sources, until=None)

    def to_instance(self) -> Instance:
        return as_one(self.name, [member.to_instance() for member in self.members])

    def stop(self, timeout: float) -> Stopped:
        """Every member at once (SIGTERM, ``timeout``, SIGKILL, removed), then the group's network."""
        results: list[Stopped] = []
        errors: list[NimctlError] = []

        def stop_one(member: Handle) -> None:
            try:
                results.append(self.runtime.stop(member, timeout))
            except NimctlError as exc:
                errors.append(exc)

        with ThreadPoolExecutor(max_workers=len(self.members) or 1) as pool:
            list(pool.map(stop_one, self.members))
        self.runtime.remove_group(self.name)
        if errors:
            raise errors[0]
        instances = [stopped.instance for stopped in results]
        return Stopped(as_one(self.name, instances), any(stopped.was_running for stopped in results))

    def close(self) -> None:
        for member in self.members:
            member.close()


def _rank(handle: Handle) -> int:
    return int(getattr(handle, "rank", 0))


def _reader(
    runtime: InstanceRuntime[Any], member: Handle, follow: bool, tail: int | None
) -> Callable[[], Iterator[str]]:
    return lambda: runtime.logs(member, follow=follow, tail=tail)


def merged(sources: Sequence[tuple[str, Callable[[], Iterator[str]]]], *, until: int | None) -> Iterator[str]:
    """Lines of several logs as they come, each tagged; ends when source ``until`` ends (None:
    when all have). One reader thread per log; the caller's thread only waits on the queue, a
    fifth of a second at a time, so that Ctrl-C still reaches it."""
    lines: queue.Queue[tuple[int, str | BaseException | None]] = queue.Queue()

    def read(index: int, tag: str, source: Callable[[], Iterator[str]]) -> None:
        try:
            for line in source():
                lines.put((index, tag + line))
        except BaseException as exc:  # handed to the caller's thread, which raises it
            lines.put((index, exc))
        lines.put((index, None))

    for index, (tag, source) in enumerate(sources):
        threading.Thread(target=read, args=(index, tag, source), daemon=True).start()
    open_sources = set(range(len(sources)))
    while open_sources and (until is None or until in open_sources):
        with contextlib.suppress(queue.Empty):
            index, item = lines.get(timeout=0.2)
            if item is None:
                open_sources.discard(index)
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    while True:  # what was already read when the log that ends it ended
        try:
            _, item = lines.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, str):
            yield item
