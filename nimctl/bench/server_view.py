"""The server's own view of a level, from its ``/v1/metrics`` (read by :func:`summarize_metrics`).

Read before the level, every :data:`SAMPLE_INTERVAL_S` during it, and after it:

- its TTFT histogram over the level: the difference of the ``after`` and ``before`` counts and sums
  (the server's count should equal the requests sent; its mean TTFT leaves out the network and the
  front, so the gap to the client's TTFT is what they cost);
- the tokens it counted over the level (prompt and generated);
- KV-cache usage and the queue (requests waiting): the highest seen while the level ran, since at its
  end, with every request answered, both are back near zero; and their values at the end.

A server without metrics (a 404, or text that is not Prometheus') gives None, never an error: the
client's own figures do not need it.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from nimctl.bench._http import get_text
from nimctl.client.metrics import MetricsSummary, summarize_metrics
from nimctl.errors import ClientError

if TYPE_CHECKING:
    from nimctl._httpx import httpx

METRICS_PATH = "/v1/metrics"
SAMPLE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class ServerView:
    ttft_count: int | None = None
    ttft_mean_ms: float | None = None
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    kv_cache_usage_peak: float | None = None  # fraction 0..1
    requests_waiting_peak: float | None = None
    kv_cache_usage_end: float | None = None
    requests_waiting_end: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def read_metrics(client: httpx.AsyncClient) -> MetricsSummary | None:
    """The server's metrics now, or None when it has none to give."""
    try:
        return summarize_metrics(await get_text(client, METRICS_PATH))
    except ClientError:
        return None


class MetricsWatch:
    """Samples the metrics while a level runs: ``async with MetricsWatch(client) as watch: ...``."""

    def __init__(self, client: httpx.AsyncClient, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.client = client
        self.interval_s = interval_s
        self.samples: list[MetricsSummary] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MetricsWatch:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sample(self) -> None:
        # The first sample comes early, so that a level shorter than the interval still gets one.
        delay = self.interval_s / 4
        while True:
            await asyncio.sleep(delay)
            delay = self.interval_s
            summary = await read_metrics(self.client)
            if summary is not None:
                self.samples.append(summary)


def server_view(
    before: MetricsSummary | None, after: MetricsSummary | None, during: list[MetricsSummary] | None = None
) -> ServerView | None:
    """The level as the server saw it; None when it gave no metrics before or after."""
    if before is None or after is None:
        return None
    count, mean = _ttft_over(before, after)
    seen = [*(during or ()), after]
    return ServerView(
        ttft_count=count,
        ttft_mean_ms=mean,
        prompt_tokens=_delta(before.prompt_tokens_total, after.prompt_tokens_total),
        generation_tokens=_delta(before.generation_tokens_total, after.generation_tokens_total),
        kv_cache_usage_peak=_peak(summary.kv_cache_usage for summary in seen),
        requests_waiting_peak=_peak(summary.requests_waiting for summary in seen),
        kv_cache_usage_end=after.kv_cache_usage,
        requests_waiting_end=after.requests_waiting,
    )


def _ttft_over(before: MetricsSummary, after: MetricsSummary) -> tuple[int | None, float | None]:
    old, new = before.time_to_first_token, after.time_to_first_token
    if new is None:
        return None, None
    old_count = old.count if old is not None else 0
    old_sum = (old.mean_s or 0.0) * old_count if old is not None else 0.0
    count = new.count - old_count
    if count <= 0:
        return max(count, 0), None
    # The histogram gives count and mean; its sum is their product, and the level's is the difference.
    total = (new.mean_s or 0.0) * new.count - old_sum
    return count, total / count * 1000.0


def _delta(old: float | None, new: float | None) -> float | None:
    return None if old is None or new is None else new - old


def _peak(values: Any) -> float | None:
    known = [value for value in values if value is not None]
    return max(known) if known else None
