"""run_sweep against the stand-in: a well-formed result, the server's view, early stops."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

from nimctl.bench.events import (
    BenchEvent,
    LevelFinished,
    LevelStarted,
    PromptsReady,
    RequestFinished,
    SweepStopped,
    WarmupFinished,
    WarmupStarted,
)
from nimctl.bench.slo import Slo
from nimctl.bench.sweep import SweepResult, arun_sweep, run_sweep
from nimctl.bench.workload import Workload
from tests.bench.conftest import StandIn


def test_two_level_sweep(standin: Callable[..., StandIn]) -> None:
    server = standin("--ttft", "0.03", "--itl", "0.01")
    events: list[BenchEvent] = []
    workload = Workload((1, 3), 12, 6, requests=6, warmup=2, seed=5)
    result = run_sweep(server.url, "m", workload, slo=Slo(ttft_ms=1000.0), on_event=events.append)
    assert not result.stopped_early and result.seed == 5
    assert result.prompts_verified == 14 and result.warmup == {"requests": 2, "ok": 2}
    kinds = [type(event) for event in events if not isinstance(event, RequestFinished)]
    assert kinds == [
        PromptsReady,
        WarmupStarted,
        WarmupFinished,
        LevelStarted,
        LevelFinished,
        LevelStarted,
        LevelFinished,
    ]
    finished = [event for event in events if isinstance(event, RequestFinished)]
    assert [event.finished for event in finished] == [1, 2, 3, 4, 5, 6] * 2
    for level, concurrency in zip(result.levels, (1, 3), strict=True):
        stats = level.stats
        assert (stats.concurrency, stats.requests, stats.ok, stats.errors) == (concurrency, 6, 6, {})
        assert (stats.input_tokens, stats.output_tokens) == (72, 36)
        assert (stats.input_mismatches, stats.output_mismatches) == (0, 0)
        assert stats.ttft.p50 >= 30 and stats.itl.p50 >= 10  # type: ignore[operator]
        assert stats.slo_met == 6
        server_view = level.server
        assert server_view is not None
        assert server_view.ttft_count == 6 and abs(server_view.ttft_mean_ms - 30.0) < 1e-6  # type: ignore[operator]
        assert (server_view.prompt_tokens, server_view.generation_tokens) == (72, 36)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["workload"]["seed"] == 5 and data["workload"]["concurrency"] == [1, 3]
    assert [level["concurrency"] for level in data["levels"]] == [1, 3]
    assert data["levels"][1]["server"]["ttft_count"] == 6


def test_a_server_without_metrics(standin: Callable[..., StandIn]) -> None:
    server = standin("--no-metrics")
    result = run_sweep(server.url, "m", Workload((1, 2), 8, 2, requests=2))
    assert [level.server for level in result.levels] == [None, None]
    assert [level.stats.ok for level in result.levels] == [2, 2]


def test_a_level_where_every_request_fails_stops_the_sweep(standin: Callable[..., StandIn]) -> None:
    server = standin("--fail", "500")
    events: list[BenchEvent] = []
    result = run_sweep(server.url, "m", Workload((1, 2, 4), 8, 2, requests=3), on_event=events.append)
    assert len(result.levels) == 1 and result.levels[0].stats.errors == {"http_5xx": 3}
    assert (
        result.failure == "every request of concurrency 1 failed; the first: HTTP 500: stand-in failure 500"
    )
    assert result.failure_kind == "http_5xx" and not result.interrupted
    assert events[-1] == SweepStopped("failed", result.failure)


def test_a_failed_warmup_stops_before_the_levels(standin: Callable[..., StandIn]) -> None:
    server = standin("--fail", "429")
    result = run_sweep(server.url, "m", Workload((1,), 8, 2, requests=3, warmup=2))
    assert result.levels == [] and result.failure_kind == "http_4xx"
    assert result.failure and result.failure.startswith("every request of the warm-up failed")


def test_server_killed_mid_sweep(standin: Callable[..., StandIn]) -> None:
    """The level running counts its errors; the next level fails whole and stops the sweep."""
    server = standin("--ttft", "0.05", "--itl", "0.05")
    killer = threading.Timer(0.8, server.kill)
    killer.start()
    started = time.monotonic()
    result = run_sweep(server.url, "m", Workload((2, 3, 4), 8, 4, requests=30, request_timeout_s=5))
    killer.join()
    assert time.monotonic() - started < 10
    first = result.levels[0].stats
    assert first.ok > 0 and first.errors.get("connection", 0) > 0 and first.requests == 30
    assert len(result.levels) == 2 and result.levels[1].stats.all_failed
    assert result.failure_kind == "connection"


def test_cancel_keeps_what_was_measured(standin: Callable[..., StandIn]) -> None:
    server = standin("--ttft", "0.1")
    events: list[BenchEvent] = []

    async def cancel_in_second_level() -> SweepResult:
        task = asyncio.create_task(
            arun_sweep(server.url, "m", Workload((4, 2), 8, 1, requests=8), on_event=events.append)
        )
        while not any(isinstance(event, LevelStarted) and event.number == 2 for event in events):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.15)
        task.cancel()
        return await task

    result = asyncio.run(cancel_in_second_level())
    assert result.interrupted and result.failure is None
    assert [level.stats.complete for level in result.levels] == [True, False]
    assert 0 < result.levels[1].stats.ok < 8  # the first wave of two finished, not all four waves
    assert result.to_dict()["levels"][1]["complete"] is False
    assert isinstance(events[-1], SweepStopped) and events[-1].reason == "interrupted"


def test_ctrl_c_under_run_sweep_returns_the_result_so_far(standin: Callable[..., StandIn]) -> None:
    """A real SIGINT to a process in run_sweep: asyncio.run cancels the sweep, which returns."""
    import signal
    import subprocess
    import sys

    from tests.bench.conftest import ROOT

    server = standin("--ttft", "0.1")
    script = (
        "import json, sys\n"
        "from nimctl.bench.sweep import run_sweep\n"
        "from nimctl.bench.workload import Workload\n"
        "def started(event):\n"
        "    if type(event).__name__ == 'LevelStarted': print('level', event.number, flush=True)\n"
        f"result = run_sweep({server.url!r}, 'm', Workload((2, 1), 8, 1, requests=40), on_event=started)\n"
        "print(json.dumps(result.to_dict()))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "level 1\n"
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=10)
    assert child.returncode == 0, err
    data = json.loads(out)
    assert data["interrupted"] is True and len(data["levels"]) == 1
    level = data["levels"][0]
    assert level["complete"] is False and 2 <= level["ok"] < 40  # ~10 on an idle machine


def test_a_duration_sweep(standin: Callable[..., StandIn]) -> None:
    server = standin("--ttft", "0.02")
    result = run_sweep(server.url, "m", Workload((1, 2), 10, 2, duration_s=0.4, warmup=1))
    assert result.prompts_verified == 32 and result.warmup == {"requests": 1, "ok": 1}
    first, second = (level.stats for level in result.levels)
    assert 3 <= first.ok <= 20 and 6 <= second.ok <= 40 and first.errors == second.errors == {}
    assert first.output_mismatches == second.output_mismatches == 0
