"""What the front knows about itself and its engine; shared by the routes and the supervisor."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.server.idle import IdleClock
from nimctl.server.token_rates import TokenRates

if TYPE_CHECKING:
    from nimctl.server.adapters import AdapterManager
    from nimctl.server.engine import EngineProcess
    from nimctl.server.membership import GroupLeader
    from nimctl.server.plan import LaunchPlan
    from nimctl.store.progress import FetchProgress


class Phase(StrEnum):
    starting = "starting"
    fetching = "fetching"  # model files: download, cache, or built-in generation
    loading = "loading"  # engine process started, not answering yet
    ready = "ready"
    unhealthy = "unhealthy"  # was ready, engine stopped answering its health check
    failed = "failed"  # engine exited or could not start: the front is exiting
    stopping = "stopping"


PHASE_MESSAGES = {
    Phase.starting: "server is starting",
    Phase.fetching: "model files are being fetched",
    Phase.loading: "model is loading in the engine",
    Phase.ready: "service is ready",
    Phase.unhealthy: "engine is not answering its health check",
    Phase.failed: "server failed",  # the engine exited, or the model files could not be had
    Phase.stopping: "server is shutting down",
}


# While the leader of a group waits for its workers, its ready message counts them.
_GATHERING = (Phase.starting, Phase.fetching, Phase.loading)


@dataclass(frozen=True)
class Cut:
    """Why the front ended a request to the engine before the engine answered it in full."""

    status: int
    message: str


# The client went away: nothing is sent, the engine's request is dropped so that vLLM aborts it.
CLIENT_GONE = Cut(499, "the client closed the connection")


class RequestWatch:
    """One request to the engine in flight; ``end`` stops the work inside its ``with`` block.

    A cancel scope of plain asyncio (anyio's cost ~6 % of the front's CPU per request): ``end``
    cancels the task from a loop callback, so that the cancellation lands at an await inside the
    block (a callback runs only while the task waits), never after it; asyncio.timeout does the same.
    """

    __slots__ = ("_cancelled", "_handle", "_inside", "_task", "cut")

    def __init__(self) -> None:
        self.cut: Cut | None = None
        self._task = asyncio.current_task()
        self._handle: asyncio.Handle | None = None
        self._inside = True
        self._cancelled = False

    def end(self, cut: Cut) -> None:
        if self.cut is None:  # the first reason stands: a client gone stays gone
            self.cut = cut
        if self._inside and self._handle is None and self._task is not None:
            self._handle = self._task.get_loop().call_soon(self._cancel)

    def _cancel(self) -> None:
        if self._inside and self._task is not None:
            self._cancelled = True
            self._task.cancel()


class InFlight:
    """The requests to the engine in flight, so that the front can end them together.

    The supervisor ends them when the engine hangs, the runner when a SIGTERM drain runs out.
    A standing cut also ends every request that starts while it stands (one that passed the
    readiness check a moment before the engine was declared hung, say).
    """

    def __init__(self) -> None:
        self._watches: set[RequestWatch] = set()
        self._standing: Cut | None = None

    def __len__(self) -> int:
        return len(self._watches)

    @contextlib.contextmanager
    def watch(self) -> Iterator[RequestWatch]:
        """Run the body as a request in flight; when it is ended, the body stops at its next await
        and execution goes on after the ``with`` block, where ``watch.cut`` says why."""
        watch = RequestWatch()
        self._watches.add(watch)
        delivered = False
        try:
            if self._standing is not None:
                watch.end(self._standing)
            yield watch
        except asyncio.CancelledError:
            delivered = True
            # Ours alone is swallowed; one that someone else asked for too goes on up.
            if not watch._cancelled or watch._task is None or watch._task.uncancel() > 0:
                raise
        finally:
            watch._inside = False
            self._watches.discard(watch)
            if watch._handle is not None:
                watch._handle.cancel()
            if watch._cancelled and not delivered and watch._task is not None:
                watch._task.uncancel()  # the body swallowed it: the task's count stays true

    def cut_all(self, cut: Cut, *, standing: bool = False) -> int:
        """End every request in flight (and, ``standing``, every later one until ``lift``); how many."""
        if standing:
            self._standing = cut
        watches = list(self._watches)
        for watch in watches:
            watch.end(cut)
        return len(watches)

    def lift(self) -> None:
        self._standing = None


@dataclass
class ServerState:
    plan: LaunchPlan
    phase: Phase = Phase.starting
    detail: str | None = None
    draining: bool = False
    model_dir: Path | None = None
    engine: EngineProcess | None = None
    engine_models: list[dict[str, Any]] = field(default_factory=list)
    engine_starts: int = 0
    exit_code: int = 0
    engine_port: int | None = None  # the plan's fixed port, else chosen just before the launch
    in_flight: InFlight = field(default_factory=InFlight)
    # How far the download has come while fetching (None before the first report, and after).
    fetch_progress: FetchProgress | None = None
    adapters: AdapterManager | None = None  # LoRA on (NIM_PEFT_SOURCE): the adapters served
    group: GroupLeader | None = None  # the leader of a multi-node group: its workers
    # Since the last inference request (NIMCTL_IDLE_STOP, /v1/metrics); started at the first ready.
    idle: IdleClock = field(default_factory=IdleClock)
    token_rates: TokenRates = field(default_factory=TokenRates)  # sampled from the engine's counters

    @property
    def group_complete(self) -> bool:
        return self.group is None or self.group.complete

    def __post_init__(self) -> None:
        if self.engine_port is None:
            self.engine_port = self.plan.engine_port

    @property
    def engine_url(self) -> str | None:
        return f"http://127.0.0.1:{self.engine_port}" if self.engine_port else None

    @property
    def ready(self) -> bool:
        return self.phase is Phase.ready and not self.draining

    @property
    def message(self) -> str:
        base = PHASE_MESSAGES[Phase.stopping if self.draining else self.phase]
        detail = self.detail
        progress = self.progress
        if progress is not None:
            detail = f"{detail}, {progress.describe()}" if detail else progress.describe()
        if self.group is not None and not self.group.complete and self.phase in _GATHERING:
            detail = f"{detail}; {self.group.status()}" if detail else self.group.status()
        return f"{base}: {detail}" if detail else base

    @property
    def progress(self) -> FetchProgress | None:
        """The download's progress while the model files are being fetched; ready reports it."""
        return self.fetch_progress if self.phase is Phase.fetching and not self.draining else None

    @property
    def max_model_len(self) -> int | None:
        for model in self.engine_models:
            if isinstance(model.get("max_model_len"), int):
                return int(model["max_model_len"])
        return self.plan.config.max_model_len or (
            self.plan.manifest.model.max_context if self.plan.manifest else None
        )

    def set_phase(self, phase: Phase, detail: str | None = None) -> None:
        # Ready again after a restart or a hang: the idle clock starts over, so an engine that was
        # unavailable for longer than the idle stop is not stopped the moment it is back.
        if phase is Phase.ready and self.phase is not Phase.ready:
            self.idle.start()
        self.phase = phase
        self.detail = detail
        self.fetch_progress = None  # a new phase starts with no download under way
