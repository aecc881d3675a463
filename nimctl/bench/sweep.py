"""One bench run: prompts, warm-up, then each concurrency level with the server's view around it.

:func:`run_sweep` is what ``nimctl bench`` calls; :func:`arun_sweep` is the same inside a running
event loop. Set-up failures raise (an unreachable or loading server, prompts that cannot fit the
model's context: the client's errors and :class:`~nimctl.errors.UsageError`); what happens during
the levels does not, it is in the result:

- a level in which every request failed ends the sweep (the next would fail alike), with
  :attr:`SweepResult.failure` holding the first server error;
- a cancel (Ctrl-C under :func:`run_sweep`) ends it with ``interrupted`` set and what finished kept,
  the level cut short included (marked ``complete: false``).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nimctl.bench._http import async_client
from nimctl.bench.dataset import Dataset, check_dataset, load_dataset
from nimctl.bench.events import (
    LevelFinished,
    LevelStarted,
    OnEvent,
    PromptsReady,
    RequestFinished,
    SweepStopped,
    WarmupFinished,
    WarmupStarted,
)
from nimctl.bench.generator import BodyFor, LevelRun, LoadGenerator, OnResult, RequestResult
from nimctl.bench.images import ImageSource
from nimctl.bench.prompts import build_prompts
from nimctl.bench.server_view import MetricsWatch, ServerView, read_metrics, server_view
from nimctl.bench.slo import Slo
from nimctl.bench.stats import LevelStats, level_stats
from nimctl.bench.workload import EncodedBody, Workload
from nimctl.errors import (
    ClientError,
    RequestRejectedError,
    ServerFailedError,
    ServerUnreachableError,
    WaitTimeoutError,
)

if TYPE_CHECKING:
    from nimctl._httpx import httpx

# The set-up calls (/tokenize, /v1/metrics) are quick; a server that takes longer is not ready.
CONTROL_TIMEOUT_S = 30.0


@dataclass
class LevelResult:
    stats: LevelStats
    server: ServerView | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.stats.to_dict(), "server": None if self.server is None else self.server.to_dict()}


@dataclass
class SweepResult:
    base_url: str
    model: str
    workload: Workload
    seed: int
    slo: Slo | None = None
    started_at: str = ""  # ISO 8601, UTC
    prompts_verified: int = 0
    warmup: dict[str, int] | None = None  # {"requests", "ok"}
    levels: list[LevelResult] = field(default_factory=list)
    interrupted: bool = False
    failure: str | None = None  # why the sweep stopped early, with the first server error
    failure_kind: str | None = None  # that error's kind (generator.ERROR_KINDS): the CLI's exit code

    @property
    def stopped_early(self) -> bool:
        return self.interrupted or self.failure is not None

    def failure_error(self) -> ClientError | None:
        """The failure as the client's error of its kind (the exit code ``nimctl health`` would give):
        connection 3, timeout 5, HTTP 4xx 6, HTTP 5xx or an unreadable answer 7; None without one."""
        if self.failure is None:
            return None
        kinds: dict[str, type[ClientError]] = {
            "connection": ServerUnreachableError,
            "timeout": WaitTimeoutError,
            "http_4xx": RequestRejectedError,
        }
        error_class = kinds.get(self.failure_kind or "", ServerFailedError)
        return error_class(
            self.failure, hint="the figures measured before it are above and in `nimctl bench history`"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "model": self.model,
            "started_at": self.started_at,
            "workload": {**self.workload.to_dict(), "seed": self.seed},
            "slo": None if self.slo is None else self.slo.to_dict(),
            "prompts_verified": self.prompts_verified,
            "warmup": self.warmup,
            "levels": [level.to_dict() for level in self.levels],
            "interrupted": self.interrupted,
            "failure": self.failure,
            "failure_kind": self.failure_kind,
        }


def run_sweep(
    base_url: str,
    model: str,
    workload: Workload,
    *,
    api_key: str | None = None,
    slo: Slo | None = None,
    on_event: OnEvent | None = None,
    tls: ssl.SSLContext | None = None,
) -> SweepResult:
    """Run the sweep in a fresh event loop; Ctrl-C returns the result so far (``interrupted``), a
    second Ctrl-C raises KeyboardInterrupt at once (asyncio.run's own handling)."""
    return asyncio.run(
        arun_sweep(base_url, model, workload, api_key=api_key, slo=slo, on_event=on_event, tls=tls)
    )


async def arun_sweep(
    base_url: str,
    model: str,
    workload: Workload,
    *,
    api_key: str | None = None,
    slo: Slo | None = None,
    on_event: OnEvent | None = None,
    tls: ssl.SSLContext | None = None,
) -> SweepResult:
    """See :func:`run_sweep`. Cancelling this coroutine returns the result so far, ``interrupted``."""
    emit: OnEvent = on_event or (lambda event: None)
    # A bad file is said before the server is asked anything.
    dataset = None if workload.dataset is None else load_dataset(workload.dataset)
    seed = workload.seed if workload.seed is not None else secrets.randbelow(2**31)
    result = SweepResult(
        base_url, model, workload, seed, slo, started_at=datetime.now(UTC).isoformat(timespec="seconds")
    )
    generator = LoadGenerator(
        base_url, api_key=api_key, timeout_s=workload.request_timeout_s, tls=tls, path=workload.path
    )
    # A pool of its own for the set-up calls and the metrics: they never take a level's connection.
    control = async_client(base_url, api_key=api_key, connections=2, timeout_s=CONTROL_TIMEOUT_S, tls=tls)
    try:
        async with control:
            requests = await _requests(control, model, workload, seed, dataset)
            result.prompts_verified = requests.verified
            emit(PromptsReady(workload.input_tokens, result.prompts_verified, seed))
            await _levels(result, generator, control, requests, emit)
    except asyncio.CancelledError:
        result.interrupted = True
    if result.interrupted:
        emit(SweepStopped("interrupted", "stopped; the figures are those measured so far"))
    return result


@dataclass(frozen=True)
class _Requests:
    """What request ``i`` sends (``body_for``) and the output tokens its usage must report."""

    body_for: BodyFor
    output_for: Callable[[int], int]
    verified: int  # prompts counted by /tokenize before the levels


async def _requests(
    control: httpx.AsyncClient, model: str, workload: Workload, seed: int, dataset: Dataset | None
) -> _Requests:
    images: ImageSource | None = None
    if workload.images:
        # A large image's raster takes a while to draw: off the loop, so that Ctrl-C is heard.
        images = await asyncio.to_thread(ImageSource, workload.images, workload.image_size, seed)

    def body(index: int, prompt: str, output_tokens: int) -> dict[str, Any] | EncodedBody:
        if images is None:
            return workload.request_body(model, prompt, output_tokens=output_tokens)
        return workload.encoded_body(
            model, prompt, images=images.urls_bytes(index), output_tokens=output_tokens
        )

    if dataset is None:
        factory, verified = await build_prompts(control, model, workload, seed)
        return _Requests(
            lambda index: body(index, factory.prompt(index), workload.output_tokens),
            lambda index: workload.output_tokens,
            verified,
        )

    verified = await check_dataset(control, model, dataset, workload.output_tokens)
    order = dataset.order(seed)
    outputs = [entry.output_tokens or workload.output_tokens for entry in order]
    return _Requests(
        lambda index: body(index, order[index % len(order)].prompt, outputs[index % len(order)]),
        lambda index: outputs[index % len(outputs)],
        verified,
    )


async def _levels(
    result: SweepResult,
    generator: LoadGenerator,
    control: httpx.AsyncClient,
    requests: _Requests,
    emit: OnEvent,
) -> None:
    workload = result.workload
    body_for = requests.body_for
    next_index = 0
    if workload.warmup:
        concurrency = min(workload.warmup, workload.max_concurrency)
        emit(WarmupStarted(workload.warmup, concurrency))
        run = await generator.run_level(body_for, concurrency, requests=workload.warmup)
        next_index = run.issued
        ok = sum(1 for request in run.results if request.ok)
        result.warmup = {"requests": len(run.results), "ok": ok}
        if run.cancelled:
            result.interrupted = True
            return
        emit(WarmupFinished(ok, len(run.results) - ok))
        if ok == 0:
            _fail(result, "the warm-up", run.results, emit)
            return
    metrics = True  # a server that gave no metrics once is not asked again
    for number, concurrency in enumerate(workload.concurrency, start=1):
        before = await read_metrics(control) if metrics else None
        metrics = before is not None
        levels = len(workload.concurrency)
        emit(LevelStarted(number, levels, concurrency, workload.requests, workload.duration_s))
        finished = 0

        def on_result(request: RequestResult, concurrency: int = concurrency) -> None:
            nonlocal finished
            finished += 1
            emit(RequestFinished(concurrency, request, finished))

        watch = MetricsWatch(control)
        run = await _run_level(
            generator, body_for, concurrency, workload, next_index, on_result, watch if metrics else None
        )
        next_index += run.issued
        after = None
        if metrics and not run.cancelled:
            try:
                after = await read_metrics(control)
            except asyncio.CancelledError:
                run.cancelled = True
        stats = level_stats(
            run, slo=result.slo, input_tokens=workload.exact_input_tokens, output_tokens=requests.output_for
        )
        level = LevelResult(stats, server_view(before, after, watch.samples))
        result.levels.append(level)
        emit(LevelFinished(stats, level.server))
        if run.cancelled:
            result.interrupted = True
            return
        if stats.all_failed:
            _fail(result, f"concurrency {concurrency}", run.results, emit)
            return


async def _run_level(
    generator: LoadGenerator,
    body_for: BodyFor,
    concurrency: int,
    workload: Workload,
    first_index: int,
    on_result: OnResult,
    watch: MetricsWatch | None,
) -> LevelRun:
    kwargs: dict[str, Any] = {
        "requests": workload.requests,
        "duration_s": workload.duration_s,
        "first_index": first_index,
        "on_result": on_result,
    }
    if watch is None:
        return await generator.run_level(body_for, concurrency, **kwargs)
    async with watch:
        return await generator.run_level(body_for, concurrency, **kwargs)


def _fail(result: SweepResult, where: str, requests: list[RequestResult], emit: OnEvent) -> None:
    first = min(requests, key=lambda request: request.end)
    result.failure = f"every request of {where} failed; the first: {first.error}"
    result.failure_kind = first.error_kind
    emit(SweepStopped("failed", result.failure))
