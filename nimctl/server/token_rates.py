"""Tokens per second, prompt and generated, from the engine's own counters.

A light sampler in the front reads ``vllm:prompt_tokens_total`` and ``vllm:generation_tokens_total``
every :data:`SAMPLE_INTERVAL_S` while the engine is ready, keeps :data:`KEEP_S` of samples, and
``/v1/metrics`` reports the rates over the last :data:`WINDOW_S` as the gauges
``nimctl_prompt_tokens_per_second`` and ``nimctl_generation_tokens_per_second`` (absent until two
samples exist). A scraper could work the rates out itself; ``ps`` and ``top`` want them from
one scrape.

It is cheap on both sides: the engine is asked for those two counters only (prometheus_client's
``name[]`` filter, :data:`FILTERED_PATH`), so it renders a few lines, not its whole document, and
the front scans those few lines. An engine that does not answer that path (three times in a row,
while its whole document answers) is asked for that document (:data:`FULL_PATH`) from then on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple
from urllib.parse import urlencode

log = logging.getLogger("nimctl.server")

PROMPT_COUNTER = "vllm:prompt_tokens_total"
GENERATION_COUNTER = "vllm:generation_tokens_total"
SAMPLE_INTERVAL_S = 2.0
KEEP_S = 30.0
WINDOW_S = 10.0
# A sample a little older than the window still serves as its start: samples come every 2 s,
# give or take a slow answer, and a rate over 10.3 s is a truer figure than none.
_SLACK_S = SAMPLE_INTERVAL_S / 2
FETCH_TIMEOUT_S = 1.5


def engine_metrics_path(names: list[str]) -> str:
    """The engine's metrics, only the samples named: prometheus_client's own ASGI app, which vLLM
    mounts at ``/metrics/``, applies ``name[]`` (its plain ``/metrics`` route renders everything)."""
    return "/metrics/?" + urlencode([("name[]", name) for name in names])


# The engine's metrics, the two counters only.
FILTERED_PATH = engine_metrics_path([PROMPT_COUNTER, GENERATION_COUNTER])
FULL_PATH = "/metrics"


class Sample(NamedTuple):
    at: float  # monotonic seconds
    prompt: float
    generation: float


class Rates(NamedTuple):
    prompt: float
    generation: float


def read_counters(text: str) -> tuple[float, float] | None:
    """The two counters' totals (summed over their label sets) in an exposition text; None when
    either is missing (an engine that does not export them, or an answer that is not metrics).

    A scan of the lines for the two names, not prometheus_client's parser: should the engine
    send its whole document (~640 lines), the parser takes ~11 ms of the front's event loop
    every 2 s, the scan ~0.2 ms. prometheus_client writes no timestamps, so a sample's value
    is its line's last field.
    """
    totals = {PROMPT_COUNTER: 0.0, GENERATION_COUNTER: 0.0}
    seen: set[str] = set()
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        for name in totals:
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
                try:
                    totals[name] += float(line.rsplit(None, 1)[-1])
                except ValueError:
                    return None
                seen.add(name)
    if len(seen) < 2:
        return None
    return totals[PROMPT_COUNTER], totals[GENERATION_COUNTER]


class TokenRates:
    """The samples of the last :data:`KEEP_S` and the rates over the last :data:`WINDOW_S`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: deque[Sample] = deque()

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, text: str) -> None:
        """One sample from the engine's metrics text; a text without the counters is skipped."""
        counters = read_counters(text)
        if counters is None:
            return
        now = self._clock()
        sample = Sample(now, *counters)
        if self._samples and (
            sample.prompt < self._samples[-1].prompt or sample.generation < self._samples[-1].generation
        ):
            self._samples.clear()  # the counters went back: a new engine, whose rates start afresh
        self._samples.append(sample)
        while self._samples and self._samples[0].at < now - KEEP_S:
            self._samples.popleft()

    def clear(self) -> None:
        self._samples.clear()

    def rates(self) -> Rates | None:
        """Tokens per second over the last :data:`WINDOW_S` (or the span of the samples there are,
        when shorter); None with fewer than two samples, or when the newest is stale."""
        if len(self._samples) < 2:
            return None
        newest = self._samples[-1]
        if self._clock() - newest.at > WINDOW_S:
            return None  # the sampler stopped (engine not ready): the last figures are old news
        start = self._samples[-2]
        for sample in self._samples:  # oldest first: the first inside the window starts it
            if sample.at >= newest.at - WINDOW_S - _SLACK_S:
                start = sample if sample is not newest else start
                break
        span = newest.at - start.at
        if span <= 0:
            return None
        return Rates((newest.prompt - start.prompt) / span, (newest.generation - start.generation) / span)

    async def sample_forever(
        self,
        fetch: Callable[[], Awaitable[str | None]],
        engine_up: Callable[[], bool],
        interval: float = SAMPLE_INTERVAL_S,
    ) -> None:
        """Sample every ``interval`` while ``engine_up()``; forget the samples while it is not.
        Runs until cancelled (the front's shutdown); a failed fetch only misses one sample."""
        while True:
            if engine_up():
                try:
                    text = await fetch()
                except Exception:  # a sampler must never take the front down; one sample is missed
                    log.debug("sampling the engine's token counters failed", exc_info=True)
                    text = None
                if text is not None:
                    self.add(text)
            else:
                self.clear()
            await asyncio.sleep(interval)


def engine_fetch(
    get_text: Callable[[str], Awaitable[str | None]], give_up_after: int = 3
) -> Callable[[], Awaitable[str | None]]:
    """The sampler's fetch through ``get_text`` (path -> the body of a 200, else None): the filtered
    path; when it fails and the whole document answers, that one. After ``give_up_after`` such
    fetches in a row (not one slow answer under load: an engine without the filtered path), only
    the whole document is asked for."""
    misses = 0

    async def fetch() -> str | None:
        nonlocal misses
        if misses < give_up_after:
            text = await get_text(FILTERED_PATH)
            if text is not None:
                misses = 0
                return text
        text = await get_text(FULL_PATH)
        if text is not None and misses < give_up_after:
            misses += 1
        return text

    return fetch
