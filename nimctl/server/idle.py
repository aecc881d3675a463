"""Idle stop (``NIMCTL_IDLE_STOP``): the front stops itself after a spell without inference requests.

What counts as use is an inference request (the routes that put work on the engine,
:data:`nimctl.server.inference.LIMITED_PATHS`), through either path to them: the framework's
(:class:`~nimctl.server.middleware.FrontMiddleware`) and the lean relay. Health probes, metrics
scrapes, the model list and the metadata do not count, so an orchestrator's probes and ``nimctl
ps`` never keep an instance alive. A request in flight (a long stream) holds the idle time at 0
until it ends. The clock starts when the engine becomes ready, and again when it is ready
again after a restart or a hang.

When the time is up the front logs one line (:data:`nimctl.contract.IDLE_STOP_LOG_MARK` first)
and stops as a SIGTERM would stop it: new requests get 503, the engine is stopped, a group's
workers are told goodbye (they exit 0), and the process exits 0, which a restart policy of
``on-failure`` leaves alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from nimctl import contract

if TYPE_CHECKING:
    from nimctl.server.state import ServerState

log = logging.getLogger("nimctl.server")

# How often the watcher looks while the engine is not ready (before the first ready, or hung).
NOT_READY_POLL_S = 1.0
# The shortest sleep between checks: a clock a little behind must not make the watcher spin.
MIN_SLEEP_S = 0.05


class IdleClock:
    """When the last inference request ended, and how many are in flight.

    Two integer updates a request: cheap enough for the hot path of the lean relay.
    """

    __slots__ = ("_active", "_clock", "_since")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._active = 0
        self._since: float | None = None  # None until the engine is first ready

    def start(self) -> None:
        """The engine has become ready (first, or again after a restart or a hang): the clock
        runs from now."""
        self._since = self._clock()

    def begin(self) -> None:
        self._active += 1

    def end(self) -> None:
        self._active -= 1
        if self._since is not None:  # one that ends before the first ready started nothing
            self._since = self._clock()

    @property
    def active(self) -> int:
        return self._active

    def idle_seconds(self) -> float | None:
        """Seconds since the last request ended (or since ready); 0 with one in flight; None
        before the engine was first ready."""
        if self._since is None:
            return None
        if self._active:
            return 0.0
        return max(0.0, self._clock() - self._since)


class IdleStop:
    """Watches the clock and asks for a clean exit (code 0) once ``interval`` has passed idle."""

    def __init__(
        self,
        state: ServerState,
        interval: float,
        request_exit: Callable[[int], None],
    ) -> None:
        self.state = state
        self.interval = interval
        self.request_exit = request_exit

    def due(self) -> bool:
        idle = self.state.idle.idle_seconds()
        return self.state.ready and idle is not None and idle >= self.interval

    def next_check(self) -> float:
        """Seconds until the soonest the stop could be due: a request meanwhile only moves it later."""
        idle = self.state.idle.idle_seconds()
        if not self.state.ready or idle is None:
            return NOT_READY_POLL_S
        if self.state.idle.active:
            return self.interval  # at least that long after it ends
        return max(MIN_SLEEP_S, self.interval - idle)

    def stop(self) -> None:
        name = contract.format_duration(self.interval)
        log.info(
            "%s no inference request for %s (%s=%s): stopping the engine and exiting",
            contract.IDLE_STOP_LOG_MARK,
            name,
            contract.IDLE_STOP,
            name,
        )
        self.state.draining = True  # from now on new requests get 503, as after a SIGTERM
        self.request_exit(0)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.next_check())
            if self.due():
                self.stop()
                return
