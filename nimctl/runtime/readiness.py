"""Waiting for a starting instance: live, then ready, reporting the phase as it goes.

Phases: ``starting`` (the process or container runs, the front does not answer yet),
``loading`` (live: the front answers, the model is loading) and ``ready``. An instance that
ends while starting is a :class:`RuntimeFailure`; one that is not ready in time is a
:class:`WaitTimeoutError`. Either way a ``failed`` event carries its last log lines first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from nimctl.errors import RuntimeFailure, WaitTimeoutError
from nimctl.runtime.instances import LIVE_PATH, READY_PATH, Watched, answers

if TYPE_CHECKING:
    import httpx

FAILURE_LOG_LINES = 30
# Two probes a second would cost a busy 2-core machine more than it tells.
POLL_INTERVAL_S = 1.0

Phase = Literal["starting", "loading", "ready", "failed"]


@dataclass(frozen=True)
class ReadinessEvent:
    phase: Phase
    elapsed: float
    last_line: str = ""
    log_tail: list[str] = field(default_factory=list)


ReadinessListener = Callable[[ReadinessEvent], None]


def wait_ready(
    target: Watched,
    *,
    timeout: float,
    on_event: ReadinessListener | None = None,
    stop_hint: str | None = None,
) -> float:
    """Block until ``target`` is ready; returns the seconds it took."""
    from nimctl._httpx import httpx
    from nimctl.runtime.credentials import load

    # An instance with TLS is checked against its own CA (and shown its client certificate, for
    # mTLS); the health probes need no key.
    found = load(target.name) if target.url.startswith("https:") else None
    verify = (found.ssl_context() if found is not None else None) or True
    with httpx.Client(timeout=2.0, verify=verify) as client:
        return _wait(client, target, timeout, on_event or (lambda _event: None), stop_hint)


def _wait(
    client: httpx.Client,
    target: Watched,
    timeout: float,
    emit: ReadinessListener,
    stop_hint: str | None,
) -> float:
    started = time.monotonic()
    phase: Phase = "starting"
    while True:
        elapsed = time.monotonic() - started
        state, code = target.state()
        if state not in {"running", "restarting", "created"}:
            tail = target.last_lines(FAILURE_LOG_LINES)
            emit(ReadinessEvent("failed", elapsed, tail[-1] if tail else "", tail))
            ended = f"exited with code {code}" if code is not None else f"ended ({state})"
            raise RuntimeFailure(
                f"{target.name} {ended} while starting, after {elapsed:.0f}s",
                hint=f"its last log lines are above; all of them: nimctl logs {target.name}",
            )
        if phase == "starting" and answers(target.url, LIVE_PATH, client=client):
            phase = "loading"
        if phase == "loading" and answers(target.url, READY_PATH, client=client):
            emit(ReadinessEvent("ready", elapsed))
            return elapsed
        if elapsed > timeout:
            tail = target.last_lines(FAILURE_LOG_LINES)
            emit(ReadinessEvent("failed", elapsed, tail[-1] if tail else "", tail))
            where = "the front never answered" if phase == "starting" else "the model did not finish loading"
            raise WaitTimeoutError(
                f"{target.name} not ready after {timeout:.0f}s: {where}",
                hint=stop_hint or f"follow it with nimctl logs -f {target.name}, or raise --timeout",
            )
        lines = target.last_lines(1)
        emit(ReadinessEvent(phase, elapsed, lines[-1] if lines else ""))
        time.sleep(POLL_INTERVAL_S)
