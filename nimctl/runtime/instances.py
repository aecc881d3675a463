"""Instances of both runtimes, as ``ps``, ``logs`` and ``stop`` see them, and what both share:
the health probe, the log line splitter, the stop timeout and the "name in use" error."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from nimctl.errors import UsageError
from nimctl.runtime.spec import Runtime

if TYPE_CHECKING:
    import httpx

READY_PATH = "/v1/health/ready"
LIVE_PATH = "/v1/health/live"
# Seconds between SIGTERM and SIGKILL, for both runtimes (`nimctl stop --timeout`). The front
# itself drains for up to its NIMCTL_SHUTDOWN_TIMEOUT (30 s) before stopping its engine.
STOP_TIMEOUT_S = 30


@dataclass(frozen=True)
class Member:
    """One node of a multi-node group, as ``ps`` lists it under the group's instance."""

    name: str
    rank: int
    state: str
    exit_code: int | None
    address: str  # where the other nodes reach it (an IP, a container name)

    @property
    def running(self) -> bool:
        return self.state in {"running", "restarting"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rank": self.rank,
            "state": self.state,
            "exit_code": self.exit_code,
            "address": self.address,
        }


# live_error of an instance that is not running: its state says why there are no figures.
LIVE_ERROR_NOT_RUNNING = "not running"


@dataclass
class LiveFigures:
    """What ``ps`` reads live from a running instance (docs/json.md); a figure not read is None."""

    idle_s: float | None = None
    idle_stop_s: float | None = None  # the configured idle stop; None: off
    idle_stop_in_s: float | None = None
    kv_cache_usage_pct: float | None = None
    requests_running: int | None = None
    requests_waiting: int | None = None
    prompt_tokens_per_s: float | None = None
    generation_tokens_per_s: float | None = None
    # Per GPU the instance's processes hold memory on: {"index", "uuid", "used_mib"}; None: no GPUs.
    gpu_memory: list[dict[str, Any]] | None = None
    live_error: str | None = None  # why the figures are missing ("timeout", "unreachable", ...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "idle_s": self.idle_s,
            "idle_stop_s": self.idle_stop_s,
            "idle_stop_in_s": self.idle_stop_in_s,
            "kv_cache_usage_pct": self.kv_cache_usage_pct,
            "requests_running": self.requests_running,
            "requests_waiting": self.requests_waiting,
            "prompt_tokens_per_s": self.prompt_tokens_per_s,
            "generation_tokens_per_s": self.generation_tokens_per_s,
            "gpu_memory": self.gpu_memory,
            "live_error": self.live_error,
        }


@dataclass
class Instance:
    """One instance: a container labelled by nimctl, or a host process with a state folder."""

    name: str
    runtime: Runtime
    model: str
    profile_id: str | None
    profile_name: str | None
    state: str  # running, exited, created, restarting, ...
    exit_code: int | None
    url: str
    started_at: datetime | None
    ident: str  # container id or process id
    ready: bool | None = None  # asked live; None when not running
    source: str | None = None  # NIM_MODEL_PATH as the server reads it (hf://, builtin://, a folder)
    cache: str | None = None  # the host's model cache it reads from
    # `run --lora-dir`'s host folder and `--lora-refresh`'s seconds (None: not given): where
    # `nimctl lora add/rm` copy adapters to, and whether the server rescans that folder.
    lora_dir: str | None = None
    lora_refresh: float | None = None
    # `run --idle-stop`'s seconds (label ai.nimctl.idle-stop, a local record's "idle_stop"); None: off.
    # Known without asking the server: an instance that ended with exit 0 and has one set most
    # likely stopped itself (its log then holds a line with contract.IDLE_STOP_LOG_MARK).
    idle_stop: float | None = None
    # A member of a multi-node group (docs/containers.md): the group's name (its leader's), this
    # member's rank and the node count. ``ps`` shows a group as its leader's instance, with
    # every member (the leader first) in ``members``.
    group: str | None = None
    rank: int = 0
    nodes: int = 1
    address: str = ""
    members: list[Member] = field(default_factory=list)
    live: LiveFigures | None = None  # read by ps (nimctl.runtime.live); None: not asked

    @property
    def is_worker(self) -> bool:
        """A group's member of rank 1 or more: it serves no API, its leader stands for it."""
        return self.group is not None and self.rank > 0

    def as_member(self) -> Member:
        return Member(self.name, self.rank, self.state, self.exit_code, self.address)

    @property
    def running(self) -> bool:
        return self.state in {"running", "restarting"}

    @property
    def idle_stopped(self) -> bool:
        """Ended by its idle stop, as far as can be told without its log: exit 0 with one set
        (``nimctl stop`` removes an instance, so a clean exit is the server's own stop; only a
        SIGTERM sent by hand also ends one with 0)."""
        return self.idle_stop is not None and not self.running and self.exit_code == 0

    def uptime_s(self, now: datetime | None = None) -> float | None:
        if not self.running or self.started_at is None:
            return None
        return ((now or datetime.now(UTC)) - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        uptime = self.uptime_s()
        return {
            "name": self.name,
            "runtime": self.runtime,
            "model": self.model,
            "profile_id": self.profile_id,
            "profile_name": self.profile_name,
            "state": self.state,
            "exit_code": self.exit_code,
            "ready": self.ready,
            "url": self.url,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "uptime_s": None if uptime is None else round(uptime),
            "id": self.ident,
            "nodes": self.nodes,
            "members": [member.to_dict() for member in self.members],
            "idle_stopped": self.idle_stopped,
            **(self.live or LiveFigures()).to_dict(),
        }


@dataclass(frozen=True)
class Stopped:
    """What ``stop`` did: the instance as it ended, and whether it was still running."""

    instance: Instance
    was_running: bool


class Watched(Protocol):
    """A starting instance, as the readiness wait watches it."""

    name: str
    url: str

    def state(self) -> tuple[str, int | None]:
        """(state, exit code when it has exited)."""
        ...

    def last_lines(self, count: int) -> list[str]: ...

    def follow(self) -> Iterator[str]:
        """The log from now on, until the instance stops."""
        ...


def name_in_use_error(name: str, holder: str) -> UsageError:
    """The one wording for a taken name; ``holder`` says what holds it (a container, a process)."""
    return UsageError(
        f"the name {name} is in use by {holder}",
        hint=f"pass another --name, or remove it first: nimctl stop {name}",
    )


def answers(
    url: str, path: str, *, client: httpx.Client | None = None, timeout: float = 2.0, verify: Any = True
) -> bool:
    """Whether ``url + path`` answers 200; any transport failure is a no.

    ``client`` lets the readiness wait reuse one connection pool across its probes.
    """
    from nimctl._httpx import httpx

    try:
        if client is not None:
            return client.get(url + path).status_code == 200
        return httpx.get(url + path, timeout=timeout, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def ask_ready(url: str, timeout: float = 2.0, *, name: str | None = None) -> bool:
    """Whether ``url`` is ready; an https instance (``name``) is checked against its own CA."""
    verify: Any = True
    if name is not None and url.startswith("https:"):
        from nimctl.runtime.credentials import load

        found = load(name)
        verify = (found.ssl_context() if found is not None else None) or True
    return answers(url, READY_PATH, timeout=timeout, verify=verify)


def lines_of(chunks: Iterable[bytes]) -> Iterator[str]:
    """Text lines from a stream of byte chunks that split lines anywhere (Docker's log stream)."""
    partial = b""
    for chunk in chunks:
        partial += chunk
        *lines, partial = partial.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")
    if partial:
        yield partial.decode("utf-8", "replace")


def fill_readiness(instances: list[Instance]) -> list[Instance]:
    """Ask every running instance's ready endpoint, all at once."""
    from concurrent.futures import ThreadPoolExecutor

    running = [instance for instance in instances if instance.running and instance.url]
    if running:
        with ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
            answers_ready = pool.map(lambda i: ask_ready(i.url, name=i.name), running)
            for instance, ready in zip(running, answers_ready, strict=True):
                instance.ready = ready
    return instances


def parse_seconds(text: object) -> float | None:
    """A label's or record's seconds; None when absent or not a positive number (a hand-edited label)."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def parse_time(text: str | None) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds, ``Z``) and our ISO ones."""
    if not text or text.startswith("0001-"):
        return None
    text = text.replace("Z", "+00:00")
    head, _, tail = text.partition(".")
    if tail:  # Python takes at most microseconds
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
