"""`nimctl ps`'s live figures: the metrics they come from, the cells, and ps itself against the
session's real engine and against a server that never answers."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nimctl.cli.live_view import gpu_memory_cell, idle_cell, short_duration, sparkline
from nimctl.client.metrics import Histogram, parse_metrics, summarize_metrics
from nimctl.runtime.instances import Instance, LiveFigures
from nimctl.runtime.live import InstanceSample, Sample, figures, interval
from tests.cli.conftest import nimctl
from tests.cli.live_records import isolated_env, record_instance
from tests.server_process import ServerProcess

# What vLLM 0.32's /v1/metrics and the front's own gauges say (trimmed to one bucket set each).
METRICS = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny-vlm"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny-vlm"} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny-vlm"} 0.125
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="tiny-vlm"} %(gen)s
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="tiny-vlm"} %(prompt)s
# TYPE vllm:inter_token_latency_seconds histogram
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.01",model_name="tiny-vlm"} %(itl_fast)s
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.1",model_name="tiny-vlm"} %(itl_count)s
vllm:inter_token_latency_seconds_bucket{engine="0",le="+Inf",model_name="tiny-vlm"} %(itl_count)s
vllm:inter_token_latency_seconds_count{engine="0",model_name="tiny-vlm"} %(itl_count)s
vllm:inter_token_latency_seconds_sum{engine="0",model_name="tiny-vlm"} %(itl_sum)s
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="tiny-vlm"} %(ttft_count)s
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny-vlm"} %(ttft_count)s
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny-vlm"} %(ttft_count)s
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny-vlm"} %(ttft_sum)s
# TYPE vllm:request_decode_time_seconds histogram
vllm:request_decode_time_seconds_bucket{engine="0",le="+Inf",model_name="tiny-vlm"} 3.0
vllm:request_decode_time_seconds_count{engine="0",model_name="tiny-vlm"} 3.0
vllm:request_decode_time_seconds_sum{engine="0",model_name="tiny-vlm"} 1.0
# TYPE nimctl_idle_seconds gauge
nimctl_idle_seconds 180.0
# TYPE nimctl_idle_stop_seconds gauge
nimctl_idle_stop_seconds 1800.0
# TYPE nimctl_generation_tokens_per_second gauge
nimctl_generation_tokens_per_second 41.25
"""


def metrics_text(gen: float = 100, prompt: float = 50, itl: tuple[float, float, float] = (90, 100, 2.0),
                 ttft: tuple[float, float] = (4, 0.8)) -> str:  # fmt: skip
    return METRICS % {
        "gen": gen, "prompt": prompt, "itl_fast": itl[0], "itl_count": itl[1], "itl_sum": itl[2],
        "ttft_count": ttft[0], "ttft_sum": ttft[1],
    }  # fmt: skip


def test_summary_reads_itl_and_the_front_gauges() -> None:
    summary = summarize_metrics(metrics_text())
    assert summary.requests_running == 2 and summary.requests_waiting == 1
    assert summary.kv_cache_usage == 0.125
    assert summary.inter_token_latency is not None
    assert summary.inter_token_latency.count == 100 and summary.inter_token_latency.mean_s == 0.02
    assert (summary.idle_s, summary.idle_stop_s) == (180.0, 1800.0)
    assert summary.generation_tokens_per_s == 41.25
    assert summary.prompt_tokens_per_s is None  # absent: not yet two samples in the front


def test_an_older_engines_itl_name_is_read_too() -> None:
    text = metrics_text().replace("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
    summary = summarize_metrics(text)
    assert summary.inter_token_latency is not None and summary.inter_token_latency.count == 100


def test_histogram_growth_between_two_reads() -> None:
    earlier = Histogram(count=10, sum=1.0, buckets=((0.1, 8), (float("inf"), 10)))
    later = Histogram(count=14, sum=1.8, buckets=((0.1, 10), (float("inf"), 14)))
    grown = later.since(earlier)
    assert grown is not None and grown.count == 4 and grown.buckets == ((0.1, 2), (float("inf"), 4))
    assert grown.summary().mean_s == pytest.approx(0.2)
    assert earlier.since(later) is None  # counts went back: the engine restarted


def sample_of(text: str, at: float) -> InstanceSample:
    return InstanceSample("a", at, ready=True, metrics=parse_metrics(text))


def test_interval_figures_come_from_the_growth_between_samples() -> None:
    before = sample_of(metrics_text(gen=100, prompt=50, itl=(90, 100, 2.0), ttft=(4, 0.8)), at=10.0)
    after = sample_of(metrics_text(gen=180, prompt=70, itl=(160, 180, 3.6), ttft=(6, 1.4)), at=12.0)
    grown = interval(before, after)
    assert grown is not None
    assert grown.generation_tokens_per_s == 40 and grown.prompt_tokens_per_s == 10
    assert grown.itl_s == pytest.approx(1.6 / 80) and grown.ttft_s == pytest.approx(0.3)
    idle = interval(
        after, sample_of(metrics_text(gen=180, prompt=70, itl=(160, 180, 3.6), ttft=(6, 1.4)), 13)
    )
    assert (
        idle is not None and idle.ttft_s is None and idle.itl_s is None and idle.generation_tokens_per_s == 0
    )
    assert interval(None, after) is None
    restarted = interval(after, sample_of(metrics_text(gen=5), at=14.0))
    assert restarted is not None and restarted.generation_tokens_per_s is None


def running_instance(name: str = "a") -> Instance:
    return Instance(name, "local", "tiny-vlm", None, None, "running", None, "http://127.0.0.1:1", None, "1")


def test_figures_of_one_sample() -> None:
    taken = Sample(taken_at=0.0, instances={"a": sample_of(metrics_text(), at=0.0)})
    live = figures(running_instance(), taken)
    assert live.kv_cache_usage_pct == 12.5 and (live.requests_running, live.requests_waiting) == (2, 1)
    assert (live.idle_s, live.idle_stop_s, live.idle_stop_in_s) == (180, 1800, 1620)
    assert live.generation_tokens_per_s == 41.2 and live.gpu_memory is None and live.live_error is None
    ended = running_instance()
    ended.state = "exited"
    assert figures(ended, taken).live_error == "not running"
    failed = Sample(0.0, {"a": InstanceSample("a", 0.0, error="unauthorized")})
    assert figures(running_instance(), failed) == LiveFigures(live_error="unauthorized")


def test_cells() -> None:
    assert idle_cell(LiveFigures(idle_s=185, idle_stop_in_s=1615)) == "3m (stop in 26m)"
    assert idle_cell(LiveFigures(idle_s=42)) == "42s"
    assert idle_cell(None) == "-"
    assert short_duration(3900) == "1h05m"
    assert (
        gpu_memory_cell(
            [{"index": 0, "uuid": "GPU-1", "used_mib": 1229}, {"index": 1, "uuid": "GPU-2", "used_mib": 512}]
        )
        == "0:1.2G 1:512M"
    )
    assert gpu_memory_cell(None) == gpu_memory_cell([]) == "-"
    assert sparkline([0, 50, 100], width=5, top=100) == "  ▁▅█"
    assert len(sparkline([float(i) for i in range(60)], width=30)) == 30


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel does, from the backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_credentials_that_cannot_be_read_are_the_instances_error_not_a_thread_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ssl

    from nimctl.runtime import credentials
    from nimctl.runtime.live import ask

    for failure, said in (
        (PermissionError(13, "Permission denied"), "PermissionError"),
        (ssl.SSLError(), "tls error"),
    ):

        def load(name: str, failure: Exception = failure) -> None:
            raise failure

        monkeypatch.setattr(credentials, "load", load)
        assert ask(running_instance(), time.monotonic() + 1).error == said


def test_ps_does_not_wait_for_an_instance_that_never_answers(tmp_path: Path, silent_url: str) -> None:
    state = tmp_path / "state"
    record_instance(state, "i17ps-silent", silent_url, os.getpid())
    started = time.monotonic()
    result = nimctl("ps", "--format", "json", env=isolated_env(state))
    took = time.monotonic() - started
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["state"] == "running" and row["ready"] is None and row["live_error"] == "timeout"
    assert row["kv_cache_usage_pct"] is None and row["requests_running"] is None
    assert took < 3.0, f"ps took {took:.2f} s"  # the deadline is 0.3 s; the rest is start-up

    table = nimctl("ps", env=isolated_env(state))
    header, line = table.stdout.strip().splitlines()
    assert "IDLE" in header and "GPU MEM" in header
    assert "- (timeout)" in line


@pytest.mark.engine
def test_ps_shows_the_live_figures_of_a_real_instance(tmp_path: Path, nim_server: ServerProcess) -> None:
    assert nim_server.process is not None
    state = tmp_path / "state"
    record_instance(state, "i17ps-real", nim_server.url, nim_server.process.pid)
    # A generous deadline: this checks the figures, the test above the deadline.
    result = nimctl("ps", "--format", "json", "--timeout", "5", env=isolated_env(state))
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["ready"] is True and row["live_error"] is None, row
    assert isinstance(row["kv_cache_usage_pct"], float) and 0 <= row["kv_cache_usage_pct"] <= 100
    assert isinstance(row["requests_running"], int) and isinstance(row["requests_waiting"], int)
    assert row["gpu_memory"] is None  # no GPU here
    for key in ("idle_s", "idle_stop_s", "idle_stop_in_s", "prompt_tokens_per_s", "generation_tokens_per_s"):
        assert key in row
    assert row["idle_stop_s"] is None  # the session's server runs without an idle stop

    table = nimctl("ps", "--timeout", "5", env=isolated_env(state))
    [line] = [line for line in table.stdout.splitlines() if line.startswith("i17ps-real")]
    assert " yes " in line and "%" in line and "/" in line
