"""A readable summary of the server's Prometheus metrics (vLLM's ``vllm:*`` families).

Values are added up over label sets (several engines or models), and latency quantiles are
estimated from histogram buckets the way Prometheus' ``histogram_quantile`` does it.
"""

from __future__ import annotations

import math
from collections import defaultdict
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_metrics(text: str) -> MetricsSummary:
    """Parse one Prometheus text document and pull out the figures people look at."""
    from prometheus_client.parser import text_string_to_metric_families

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

    def total(name: str) -> float | None:
        return totals.get(name)

    return MetricsSummary(
        requests_running=total("vllm:num_requests_running"),
        requests_waiting=total("vllm:num_requests_waiting"),
        kv_cache_usage=total("vllm:kv_cache_usage_perc"),
        prompt_tokens_total=total("vllm:prompt_tokens_total"),
        generation_tokens_total=total("vllm:generation_tokens_total"),
        requests_finished=dict(finished),
        time_to_first_token=_latency("vllm:time_to_first_token_seconds", totals, buckets),
        e2e_latency=_latency("vllm:e2e_request_latency_seconds", totals, buckets),
        ready=None if total("nimctl_ready") is None else bool(totals["nimctl_ready"]),
        front_requests_in_flight=total("nimctl_http_requests_in_flight"),
        engine_starts_total=total("nimctl_engine_starts_total"),
    )


def _latency(
    name: str, totals: dict[str, float], buckets: dict[str, dict[float, float]]
) -> LatencySummary | None:
    if f"{name}_count" not in totals:
        return None
    count = int(totals[f"{name}_count"])
    mean = totals[f"{name}_sum"] / count if count else None
    cumulative = sorted(buckets.get(name, {}).items())
    return LatencySummary(
        count=count,
        mean_s=mean,
        p50_s=histogram_quantile(0.5, cumulative),
        p90_s=histogram_quantile(0.9, cumulative),
        p99_s=histogram_quantile(0.99, cumulative),
    )


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
