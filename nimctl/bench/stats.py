"""The figures of one level, as AIPerf defines them.

- requests/s and output tokens/s: the successful requests and their output tokens (the server's
  ``usage``) over the level's duration, from its first request sent to its last answer ended;
- TTFT: from sending a request to the first chunk carrying text (streamed requests only);
- ITL, per request: ``(latency - TTFT) / (output tokens - 1)``, then aggregated over the requests
  (mean and percentiles of those per-request figures, not of every gap between two chunks);
- end-to-end latency: from sending to the last byte;
- percentiles: linear interpolation between the closest ranks (numpy's default, as AIPerf uses);
- goodput: the successful requests per second that met every objective of the :class:`~.slo.Slo`.

Times are reported in milliseconds. ``to_dict()`` keys are stable (documented with the JSON output).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nimctl.bench.generator import LevelRun, RequestResult
    from nimctl.bench.slo import Slo


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of an ascending, non-empty list, linearly interpolated."""
    if not sorted_values:
        raise ValueError("no values")
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True)
class Distribution:
    """Milliseconds over ``count`` requests; the figures are None when there were none."""

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    @classmethod
    def of_seconds(cls, values: Iterable[float | None]) -> Distribution:
        ms = sorted(value * 1000.0 for value in values if value is not None)
        if not ms:
            return cls()
        return cls(
            count=len(ms),
            mean=sum(ms) / len(ms),
            p50=percentile(ms, 50),
            p90=percentile(ms, 90),
            p99=percentile(ms, 99),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "p50": self.p50, "p90": self.p90, "p99": self.p99, "count": self.count}


@dataclass(frozen=True)
class LevelStats:
    concurrency: int
    requests: int  # finished, successful or not
    ok: int
    errors: dict[str, int]  # kind -> count (generator.ERROR_KINDS)
    first_error: str | None  # the message of the failure that ended first
    first_error_kind: str | None
    duration_s: float
    requests_per_s: float | None
    output_tokens_per_s: float | None
    input_tokens: int  # the server's usage, summed over the successful requests
    output_tokens: int
    ttft: Distribution
    itl: Distribution
    e2e: Distribution
    # Successful requests whose usage differs from the tokens asked for (None: nothing was asked).
    input_mismatches: int = 0
    output_mismatches: int = 0
    slo: Slo | None = None
    slo_met: int | None = None
    goodput_per_s: float | None = None
    complete: bool = True  # False: cut short by a cancel (Ctrl-C)
    error_statuses: dict[str, int] = field(default_factory=dict)  # "503" -> count

    @property
    def all_failed(self) -> bool:
        return self.requests > 0 and self.ok == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "complete": self.complete,
            "requests": self.requests,
            "ok": self.ok,
            "errors": dict(self.errors),
            "error_statuses": dict(self.error_statuses),
            "first_error": self.first_error,
            "first_error_kind": self.first_error_kind,
            "duration_s": self.duration_s,
            "requests_per_s": self.requests_per_s,
            "output_tokens_per_s": self.output_tokens_per_s,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "token_mismatches": {"input": self.input_mismatches, "output": self.output_mismatches},
            "ttft_ms": self.ttft.to_dict(),
            "itl_ms": self.itl.to_dict(),
            "e2e_ms": self.e2e.to_dict(),
            "goodput": None
            if self.slo is None
            else {"slo": self.slo.to_dict(), "met": self.slo_met, "requests_per_s": self.goodput_per_s},
        }


def level_stats(
    run: LevelRun,
    *,
    slo: Slo | None = None,
    input_tokens: int | None = None,
    output_tokens: int | Callable[[int], int] | None = None,
) -> LevelStats:
    """The figures of ``run``; ``input_tokens``/``output_tokens``: what each request asked for (None:
    not checked; a function of the request's index, when requests ask for different counts)."""
    ok = [result for result in run.results if result.ok]
    failed = [result for result in run.results if not result.ok]
    duration = run.duration_s
    out_tokens = sum(result.output_tokens or 0 for result in ok)
    first_failed = min(failed, key=lambda result: result.end) if failed else None
    met = None
    if slo is not None:
        met = sum(1 for result in ok if slo.met(result.ttft_s, result.itl_s, result.e2e_s))
    return LevelStats(
        concurrency=run.concurrency,
        requests=len(run.results),
        ok=len(ok),
        errors=dict(Counter(result.error_kind for result in failed if result.error_kind)),
        error_statuses={str(k): v for k, v in Counter(r.status for r in failed if r.status).items()},
        first_error=first_failed.error if first_failed else None,
        first_error_kind=first_failed.error_kind if first_failed else None,
        duration_s=duration,
        requests_per_s=_rate(len(ok), duration),
        output_tokens_per_s=_rate(out_tokens, duration),
        input_tokens=sum(result.input_tokens or 0 for result in ok),
        output_tokens=out_tokens,
        ttft=Distribution.of_seconds(result.ttft_s for result in ok),
        itl=Distribution.of_seconds(result.itl_s for result in ok),
        e2e=Distribution.of_seconds(result.e2e_s for result in ok),
        input_mismatches=_mismatches(ok, "input_tokens", input_tokens),
        output_mismatches=_mismatches(ok, "output_tokens", output_tokens),
        slo=slo,
        slo_met=met,
        goodput_per_s=None if met is None else _rate(met, duration),
        complete=not run.cancelled,
    )


def running_stats(
    concurrency: int, results: list[RequestResult], now: float, *, slo: Slo | None = None
) -> LevelStats:
    """The figures of a level still running, from its first request sent to ``now`` (a live view's)."""
    from nimctl.bench.generator import LevelRun

    start = min((result.start for result in results), default=now)
    return level_stats(LevelRun(concurrency, start, now, list(results)), slo=slo)


def _rate(count: int, duration_s: float) -> float | None:
    return count / duration_s if duration_s > 0 else None


def _mismatches(results: list[Any], name: str, expected: int | Callable[[int], int] | None) -> int:
    if expected is None:
        return 0
    if callable(expected):
        return sum(1 for result in results if getattr(result, name) != expected(result.index))
    return sum(1 for result in results if getattr(result, name) != expected)
