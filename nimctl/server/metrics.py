"""The front's own Prometheus metrics, and the one document ``/v1/metrics`` serves.

The front keeps its metrics in a registry of its own under the ``nimctl_`` prefix, so
that appending them to the engine's document (``vllm:*``, ``http_*``, ``process_*``)
never repeats a metric family.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nimctl.server.state import Phase
from nimctl.server.token_rates import WINDOW_S

if TYPE_CHECKING:
    from nimctl.server.state import ServerState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Latency buckets span a health check (ms) to a long generation (minutes).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _EngineStateCollector(Collector):
    """Readiness and engine state read from the server state at scrape time."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    def collect(self) -> Iterator[Any]:
        ready = GaugeMetricFamily("nimctl_ready", "1 when /v1/health/ready answers 200, else 0")
        ready.add_metric([], 1.0 if self._state.ready else 0.0)
        yield ready
        phase = GaugeMetricFamily("nimctl_engine_state", "1 for the engine's current phase", labels=["state"])
        for each in Phase:
            phase.add_metric([each.value], 1.0 if self._state.phase is each else 0.0)
        yield phase
        starts = CounterMetricFamily("nimctl_engine_starts", "Times the engine process was started")
        starts.add_metric([], float(self._state.engine_starts))
        yield starts
        yield from self._idle()
        yield from self._token_rates()

    def _idle(self) -> Iterator[Any]:
        """The idle time while ready (absent otherwise), and the idle stop when one is set."""
        idle = self._state.idle.idle_seconds()
        if self._state.ready and idle is not None:
            gauge = GaugeMetricFamily(
                "nimctl_idle_seconds", "Seconds since the last inference request ended (0 while one runs)"
            )
            gauge.add_metric([], round(idle, 3))
            yield gauge
        interval = self._state.plan.config.idle_stop
        if interval is not None:
            gauge = GaugeMetricFamily(
                "nimctl_idle_stop_seconds", "The server stops after this long idle (NIMCTL_IDLE_STOP)"
            )
            gauge.add_metric([], interval)
            yield gauge

    def _token_rates(self) -> Iterator[Any]:
        rates = self._state.token_rates.rates()
        if rates is None:
            return
        for name, what, value in (
            ("nimctl_prompt_tokens_per_second", "Prompt tokens", rates.prompt),
            ("nimctl_generation_tokens_per_second", "Generated tokens", rates.generation),
        ):
            gauge = GaugeMetricFamily(name, f"{what} per second over the last {WINDOW_S:g} s")
            gauge.add_metric([], round(value, 3))
            yield gauge


class FrontMetrics:
    def __init__(self, state: ServerState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "nimctl_http_requests",
            "Requests answered by the front, by route and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nimctl_http_request_duration_seconds",
            "Time from request to the end of the response, by route",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "nimctl_http_requests_in_flight", "Requests being answered now", registry=self.registry
        )
        self.registry.register(_EngineStateCollector(state))

    def observe(self, route: str, method: str, status: int, started: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(time.perf_counter() - started)

    def render(self, engine_text: str | None, names: frozenset[str] | None = None) -> bytes:
        """The engine's text, then the front's own metrics; with ``names`` (a ``name[]`` filter, the
        engine's part already narrowed by the engine) only the front's samples named."""
        own = generate_latest(self.registry)
        if names:
            own = only_samples(own.decode(), names).encode()
        if not engine_text:
            return own
        engine = engine_text if engine_text.endswith("\n") else engine_text + "\n"
        return engine.encode() + own


_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def only_samples(text: str, names: frozenset[str]) -> str:
    """The exposition ``text`` with only the samples ``names`` lists (prometheus_client's
    ``name[]`` rule: sample names, ``_bucket`` and all), and their families' HELP and TYPE lines.
    The front's own histograms grow with the routes it has answered (tens of KB)."""
    families = set(names)
    for name in names:
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                families.add(name[: -len(suffix)])
    kept = []
    for line in text.splitlines(keepends=True):
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[2] in families:
                kept.append(line)
        elif line.split("{", 1)[0].split(" ", 1)[0] in names:
            kept.append(line)
    return "".join(kept)
