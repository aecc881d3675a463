"""What a sweep reports while it runs, to the ``on_event`` callback of :func:`~.sweep.run_sweep`.

A live view draws from these; none is needed for the result, which :func:`~.sweep.run_sweep`
returns whole. The callback runs in the sweep's event loop: it must return quickly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nimctl.bench.generator import RequestResult
    from nimctl.bench.server_view import ServerView
    from nimctl.bench.stats import LevelStats


@dataclass(frozen=True)
class PromptsReady:
    """The prompts are built; ``verified`` of them were counted by the server's ``/tokenize``."""

    input_tokens: int | None  # None: a dataset's prompts, whose sizes vary
    verified: int
    seed: int


@dataclass(frozen=True)
class WarmupStarted:
    requests: int
    concurrency: int


@dataclass(frozen=True)
class WarmupFinished:
    ok: int
    failed: int


@dataclass(frozen=True)
class LevelStarted:
    """Level ``number`` (from 1) of ``of``; ``requests`` or ``duration_s`` says how long it lasts."""

    number: int
    of: int
    concurrency: int
    requests: int | None
    duration_s: float | None


@dataclass(frozen=True)
class RequestFinished:
    """One request of the level running (``finished`` so far in it, this one included)."""

    concurrency: int
    result: RequestResult
    finished: int


@dataclass(frozen=True)
class LevelFinished:
    stats: LevelStats
    server: ServerView | None


@dataclass(frozen=True)
class SweepStopped:
    """The sweep ends before its last level: ``reason`` is "failed" or "interrupted"."""

    reason: str
    message: str


BenchEvent = (
    PromptsReady
    | WarmupStarted
    | WarmupFinished
    | LevelStarted
    | RequestFinished
    | LevelFinished
    | SweepStopped
)
OnEvent = Callable[[BenchEvent], None]
