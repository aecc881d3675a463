"""Level figures on known timings: percentiles, AIPerf's ITL, rates, goodput, errors, stable keys."""

from __future__ import annotations

import pytest

from nimctl.bench.generator import LevelRun, RequestResult
from nimctl.bench.slo import Slo
from nimctl.bench.stats import Distribution, level_stats, percentile


def ok(index: int, start: float, ttft: float, e2e: float, tokens: int = 11) -> RequestResult:
    return RequestResult(
        index, start, start + e2e, first_token=start + ttft, input_tokens=16, output_tokens=tokens
    )


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_distribution_in_milliseconds() -> None:
    dist = Distribution.of_seconds([0.001 * n for n in range(1, 101)] + [None])
    assert dist.count == 100
    assert dist.mean == pytest.approx(50.5)
    assert dist.p50 == pytest.approx(50.5)
    assert dist.p90 == pytest.approx(90.1)
    assert dist.p99 == pytest.approx(99.01)
    assert Distribution.of_seconds([]).to_dict() == {
        "mean": None,
        "p50": None,
        "p90": None,
        "p99": None,
        "count": 0,
    }


def test_level_figures_on_known_timings() -> None:
    # Four requests over 2 s: TTFT 100..400 ms, latency 1.1..1.4 s, 11 tokens: ITL = (e2e - ttft) / 10 = 100 ms.
    results = [ok(n, start=0.5 * n, ttft=0.1 * (n + 1), e2e=1.0 + 0.1 * (n + 1)) for n in range(4)]
    failed = [
        RequestResult(4, 0.2, 0.3, error_kind="http_5xx", error="HTTP 500: boom", status=500),
        RequestResult(5, 0.1, 0.25, error_kind="timeout", error="no answer"),
    ]
    run = LevelRun(concurrency=2, start=0.0, end=2.0, results=results + failed, issued=6)
    stats = level_stats(run, slo=Slo(ttft_ms=250.0, itl_ms=150.0), input_tokens=16, output_tokens=11)
    assert (stats.requests, stats.ok) == (6, 4)
    assert stats.errors == {"http_5xx": 1, "timeout": 1}
    assert stats.error_statuses == {"500": 1}
    assert stats.first_error == "no answer" and stats.first_error_kind == "timeout"  # it ended first
    assert stats.requests_per_s == pytest.approx(2.0)
    assert stats.output_tokens_per_s == pytest.approx(22.0)
    assert stats.ttft.p50 == pytest.approx(250.0)
    assert stats.ttft.mean == pytest.approx(250.0)
    assert stats.itl.mean == pytest.approx(100.0)
    assert stats.itl.p99 == pytest.approx(100.0)
    assert stats.e2e.p90 == pytest.approx(1370.0)
    assert stats.slo_met == 2  # TTFT 100 and 200 ms
    assert stats.goodput_per_s == pytest.approx(1.0)
    assert (stats.input_mismatches, stats.output_mismatches) == (0, 0)
    assert not stats.all_failed


def test_itl_needs_two_tokens_and_a_stream() -> None:
    one = ok(0, 0.0, 0.1, 0.1, tokens=1)
    whole = RequestResult(1, 0.0, 1.0, input_tokens=16, output_tokens=8)
    assert one.itl_s is None and whole.itl_s is None and whole.ttft_s is None
    stats = level_stats(LevelRun(1, 0.0, 1.0, [one, whole]), output_tokens=8)
    assert stats.itl.count == 0 and stats.ttft.count == 1
    assert stats.output_mismatches == 1


def test_all_failed_and_empty_levels() -> None:
    failed = RequestResult(0, 0.0, 0.1, error_kind="connection", error="refused")
    stats = level_stats(LevelRun(1, 0.0, 0.1, [failed]))
    assert stats.all_failed and stats.requests_per_s == 0.0
    empty = level_stats(LevelRun(1, 0.0, 0.0, [], cancelled=True))
    assert not empty.all_failed and empty.requests_per_s is None and not empty.complete


def test_to_dict_keys_are_stable() -> None:
    stats = level_stats(LevelRun(1, 0.0, 1.0, [ok(0, 0.0, 0.1, 0.5)]), slo=Slo(e2e_ms=1000.0))
    assert list(stats.to_dict()) == [
        "concurrency",
        "complete",
        "requests",
        "ok",
        "errors",
        "error_statuses",
        "first_error",
        "first_error_kind",
        "duration_s",
        "requests_per_s",
        "output_tokens_per_s",
        "input_tokens",
        "output_tokens",
        "token_mismatches",
        "ttft_ms",
        "itl_ms",
        "e2e_ms",
        "goodput",
    ]
    assert stats.to_dict()["goodput"] == {
        "slo": {"ttft_ms": None, "itl_ms": None, "e2e_ms": 1000.0},
        "met": 1,
        "requests_per_s": 1.0,
    }


def test_running_stats_for_a_live_view() -> None:
    from nimctl.bench.stats import running_stats

    stats = running_stats(2, [ok(0, 10.0, 0.1, 0.5), ok(1, 10.5, 0.1, 0.5)], now=12.0)
    assert stats.duration_s == 2.0 and stats.requests_per_s == 1.0 and stats.ok == 2
    assert running_stats(2, [], now=1.0).requests_per_s is None
