"""Waiting for a starting instance: live, then ready, reporting the phase as it goes.

Phases: ``starting`` (the process or container runs, the front does not answer yet),
``loading`` (live: the front answers, the model is loading) and ``ready``. An instance that
ends while starting is a :class:`RuntimeFailure`; one that is not ready in time is a
:class:`WaitTimeoutError`. Either way a ``failed`` event carries its last log lines first.
While loading, each event carries what the server's ready check says (its message, and the
download's progress while ``nim-serve`` fetches the model files).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from nimctl.errors import RuntimeFailure, WaitTimeoutError
from nimctl.runtime.instances import LIVE_PATH, READY_PATH, Watched, answers
from nimctl.store.progress import FetchProgress

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
    message: str = ""  # the server's ready message while loading ("model is loading in the engine")
    progress: FetchProgress | None = None  # while the server downloads the model files


@dataclass(frozen=True)
class _Answer:
    """What one ready check said."""

    ready: bool
    message: str = ""
    progress: FetchProgress | None = None


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
    said = _Answer(False)
    while True:
        elapsed = time.monotonic() - started
        state, code = target.state()
        if state not in {"running", "restarting", "created"}:
            tail = target.last_lines(FAILURE_LOG_LINES)
            emit(ReadinessEvent("failed", elapsed, tail[-1] if tail else "", tail))
            ended = f"exited with code {code}" if code is not None else f"ended ({state})"
            # A group (nimctl.runtime.group) names the member that ended; its lines are the tail.
            who = getattr(target, "ended_member", None) or target.name
            raise RuntimeFailure(
                f"{who} {ended} while starting, after {elapsed:.0f}s",
                hint=f"its last log lines are above; all of them: nimctl logs {target.name}",
            )
        if phase == "starting" and answers(target.url, LIVE_PATH, client=client):
            phase = "loading"
        if phase == "loading":
            said = _ask_ready(client, target.url)
            if said.ready:
                emit(ReadinessEvent("ready", elapsed))
                return elapsed
        if elapsed > timeout:
            tail = target.last_lines(FAILURE_LOG_LINES)
            emit(ReadinessEvent("failed", elapsed, tail[-1] if tail else "", tail))
            where = "the front never answered" if phase == "starting" else "the model did not finish loading"
            if said.message:
                where += f" ({said.message})"
            raise WaitTimeoutError(
                f"{target.name} not ready after {timeout:.0f}s: {where}",
                hint=stop_hint or f"follow it with nimctl logs -f {target.name}, or raise --timeout",
            )
        lines = target.last_lines(1)
        last = lines[-1] if lines else ""
        emit(ReadinessEvent(phase, elapsed, last, message=said.message, progress=said.progress))
        time.sleep(POLL_INTERVAL_S)


def _ask_ready(client: httpx.Client, url: str) -> _Answer:
    """Ready or not, and the server's words while not: its 503 body's message and progress (nim-serve
    reports the download's numbers there); any failure to answer or to parse is a plain no."""
    from nimctl._httpx import httpx

    try:
        response = client.get(url + READY_PATH)
    except httpx.HTTPError:
        return _Answer(False)
    if response.status_code == 200:
        return _Answer(True)
    try:
        body = response.json()
    except ValueError:
        return _Answer(False)
    if not isinstance(body, dict):
        return _Answer(False)
    message = body.get("message")
    progress = None
    if isinstance(body.get("progress"), dict):
        try:
            progress = FetchProgress.from_dict(body["progress"])
        except (KeyError, TypeError, ValueError):
            progress = None  # another server's shape: the message still says what it does
    return _Answer(False, message if isinstance(message, str) else "", progress)
