"""A readable summary of the server's Prometheus metrics (vLLM's ``vllm:*`` families).

Values are added up over label sets (several engines or models), and latency quantiles are
estimated from histogram buckets the way Prometheus' ``histogram_quantile`` does it.
:func:`parse_metrics` keeps the raw counters and histograms, so that ``nimctl top`` can tell
what happened between two reads (:meth:`Histogram.since`).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from nimctl.errors import UnreadableAnswerError


@dataclass
class LatencySummary:
    count: int
    mean_s: float | None
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None


@dataclass
class MetricsSummary:
    requests_running: float | None = None
    requests_waiting: float | None = None
    # Fraction 0..1 of the KV cache in use.
    kv_cache_usage: float | None = None
    prompt_tokens_total: float | None = None
    generation_tokens_total: float | None = None
    requests_finished: dict[str, float] = field(default_factory=dict)
    time_to_first_token: LatencySummary | None = None
    e2e_latency: LatencySummary | None = None
    # The front's own (nimctl_*): absent on a server that is not nimctl's.
    ready: bool | None = None
    front_requests_in_flight: float | None = None
    engine_starts_total: float | None = None
    # Since the engine started (vLLM 0.32's vllm:inter_token_latency_seconds; older engines
    # export it as vllm:time_per_output_token_seconds).
    inter_token_latency: LatencySummary | None = None
    # The front's rates over its last sampling window, and its idle stop (absent: not configured).
    prompt_tokens_per_s: float | None = None
    generation_tokens_per_s: float | None = None
    idle_s: float | None = None
    idle_stop_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
ITL_BEFORE_0_11 = "vllm:time_per_output_token_seconds"
E2E = "vllm:e2e_request_latency_seconds"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
# The metric families the summary reads. A server's document is ~60 KB, most of it histograms
# nobody here looks at: parsing only these lines is ten times quicker (ps reads several at once).
SUMMARY_FAMILIES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
    "vllm:request_success",
    TTFT,
    ITL,
    ITL_BEFORE_0_11,
    E2E,
    "nimctl_ready",
    "nimctl_http_requests_in_flight",
    "nimctl_engine_starts",
    "nimctl_prompt_tokens_per_second",
    "nimctl_generation_tokens_per_second",
    "nimctl_idle_seconds",
    "nimctl_idle_stop_seconds",
)


def sample_names(families: Iterable[str]) -> list[str]:
    """Each family's sample names, as prometheus_client's ``name[]`` filter takes them."""
    return [family + suffix for family in families for suffix in ("", "_total", "_bucket", "_sum", "_count")]


# What ps and top send as /v1/metrics's query: the families they read (nim-serve passes
# ``name[]`` on to the engine for its part, and applies it to its own).
SUMMARY_QUERY = [("name[]", name) for name in sample_names(SUMMARY_FAMILIES)]


@dataclass(frozen=True)
class Histogram:
    """One histogram added up over its label sets: ``buckets`` is ``[(upper_bound, cumulative_count)]``."""

    count: float
    sum: float
    buckets: tuple[tuple[float, float], ...]

    def since(self, earlier: Histogram | None) -> Histogram | None:
        """What was observed after ``earlier``; None when the counts went back (the engine restarted)."""
        if earlier is None:
            return None
        if self.count < earlier.count:
            return None
        before = dict(earlier.buckets)
        return Histogram(
            count=self.count - earlier.count,
            sum=self.sum - earlier.sum,
            buckets=tuple((bound, count - before.get(bound, 0.0)) for bound, count in self.buckets),
        )

    def summary(self) -> LatencySummary:
        cumulative = list(self.buckets)
        return LatencySummary(
            count=int(self.count),
            mean_s=self.sum / self.count if self.count else None,
            p50_s=histogram_quantile(0.5, cumulative),
            p90_s=histogram_quantile(0.9, cumulative),
            p99_s=histogram_quantile(0.99, cumulative),
        )


@dataclass
class ParsedMetrics:
    """Every sample added up over its label sets (``totals`` by sample name), and the histograms."""

    totals: dict[str, float]
    histograms: dict[str, Histogram]
    finished: dict[str, float]

    def total(self, name: str) -> float | None:
        return self.totals.get(name)


def parse_metrics(text: str, families: Iterable[str] | None = None) -> ParsedMetrics:
    """Parse a Prometheus text document; ``families`` limits it to these metric names (faster)."""
    text_string_to_metric_families = parser()
    if families is not None:
        text = _only(text, tuple(families))
    totals: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    finished: dict[str, float] = defaultdict(float)
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_bucket") and "le" in sample.labels:
                    buckets[sample.name[: -len("_bucket")]][float(sample.labels["le"])] += sample.value
                else:
                    totals[sample.name] += sample.value
                if sample.name == "vllm:request_success_total":
                    finished[sample.labels.get("finished_reason", "unknown")] += sample.value
    except ValueError as exc:
        raise UnreadableAnswerError(
            f"the server's /v1/metrics is not valid Prometheus text: {exc}",
            hint="nimctl metrics --raw shows what it sent",
        ) from None
    histograms = {
        name: Histogram(
            count=totals.get(f"{name}_count", 0.0),
            sum=totals.get(f"{name}_sum", 0.0),
            buckets=tuple(sorted(bounds.items())),
        )
        for name, bounds in buckets.items()
        if f"{name}_count" in totals
    }
    return ParsedMetrics(dict(totals), histograms, dict(finished))


_SAMPLE_OR_COMMENT = re.compile(
    r"# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* |[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+0-9.eEinfINFaN]+( -?\d+)?$"
)


def parser() -> Any:
    """prometheus-client's text parser (imported on first use: ~50 ms)."""
    from prometheus_client.parser import text_string_to_metric_families

    return text_string_to_metric_families


def _only(text: str, families: tuple[str, ...]) -> str:
    """The lines (samples and their # TYPE/# HELP) of these families; any line that is neither a
    sample nor a comment stays, so that a document that is not Prometheus text is still refused."""
    kept = []
    for line in text.splitlines():
        if _SAMPLE_OR_COMMENT.match(line) is None:
            if line.strip() and not line.startswith("#"):
                kept.append(line)
            continue
        words = line.split(" ", 3)
        name = words[2] if line.startswith("#") else line
        if name.startswith(families):
            kept.append(line)
    return "\n".join(kept) + "\n"


def summarize_metrics(text: str) -> MetricsSummary:
    """Parse one Prometheus text document and pull out the figures people look at."""
    return summarize(parse_metrics(text, SUMMARY_FAMILIES))


def summarize(parsed: ParsedMetrics) -> MetricsSummary:
    total = parsed.total

    def latency(name: str) -> LatencySummary | None:
        found = parsed.histograms.get(name)
        return None if found is None else found.summary()

    ready = total("nimctl_ready")
    return MetricsSummary(
        requests_running=total("vllm:num_requests_running"),
        requests_waiting=total("vllm:num_requests_waiting"),
        kv_cache_usage=total("vllm:kv_cache_usage_perc"),
        prompt_tokens_total=total(PROMPT_TOKENS),
        generation_tokens_total=total(GENERATION_TOKENS),
        requests_finished=dict(parsed.finished),
        time_to_first_token=latency(TTFT),
        e2e_latency=latency(E2E),
        ready=None if ready is None else bool(ready),
        front_requests_in_flight=total("nimctl_http_requests_in_flight"),
        engine_starts_total=total("nimctl_engine_starts_total"),
        inter_token_latency=latency(ITL) or latency(ITL_BEFORE_0_11),
        prompt_tokens_per_s=total("nimctl_prompt_tokens_per_second"),
        generation_tokens_per_s=total("nimctl_generation_tokens_per_second"),
        idle_s=total("nimctl_idle_seconds"),
        idle_stop_s=total("nimctl_idle_stop_seconds"),
    )


def itl_histogram(parsed: ParsedMetrics) -> Histogram | None:
    return parsed.histograms.get(ITL) or parsed.histograms.get(ITL_BEFORE_0_11)


def histogram_quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """Prometheus' estimate: linear interpolation inside the bucket that holds the q-th observation.

    ``cumulative`` is ``[(upper_bound, cumulative_count), ...]`` sorted by bound, ending at +Inf.
    """
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in cumulative:
        if count >= rank:
            if math.isinf(upper_bound):
                return lower_bound  # above the highest finite bucket: its bound is the best we know
            if count == lower_count:
                return upper_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = upper_bound, count
    return None
