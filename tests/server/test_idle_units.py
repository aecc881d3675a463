"""Idle stop and token rates, one layer at a time: the duration parser, the idle clock and its
watcher on a fake clock, the token-rate sampler on a fake fetch, the server's configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nimctl import contract
from nimctl.errors import ConfigError
from nimctl.server.config import ServerConfig
from nimctl.server.idle import NOT_READY_POLL_S, IdleClock, IdleStop
from nimctl.server.plan import build_plan
from nimctl.server.state import Phase, ServerState
from nimctl.server.token_rates import (
    FILTERED_PATH,
    FULL_PATH,
    KEEP_S,
    Rates,
    TokenRates,
    engine_fetch,
    read_counters,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1h30m15s", 5415),
        ("2m30s", 150),
        ("90", 90),
        ("2.5", 2.5),
        (" 5M ", 300),
        ("0", 0),
        ("0s", 0),
    ],
)
def test_durations_are_read(text: str, seconds: float) -> None:
    assert contract.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5", "inf", "nan", "1m1h", "h", "5 m", "1d", "30 minutes"])
def test_bad_durations_are_refused_with_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"90s, 30m, 1h, 1h30m or bare seconds"):
        contract.parse_duration(text)


@pytest.mark.parametrize("seconds", [1, 59, 60, 90, 3600, 5400, 5415, 2.5, 86400])
def test_formatted_durations_read_back(seconds: float) -> None:
    assert contract.parse_duration(contract.format_duration(seconds)) == seconds


def test_the_server_reads_the_variable_with_the_same_parser(tmp_path: Path) -> None:
    def idle(value: str) -> float | None:
        return ServerConfig.from_env({contract.IDLE_STOP: value}, cache_path=tmp_path).idle_stop

    assert idle("1h30m") == 5400 and idle("45") == 45
    assert idle("0") is None and idle("") is None  # off
    assert ServerConfig.from_env({}, cache_path=tmp_path).idle_stop is None
    with pytest.raises(ConfigError) as caught:
        idle("soon")
    assert caught.value.message.startswith(f"invalid {contract.IDLE_STOP}='soon'")
    assert "\n" not in caught.value.message and contract.IDLE_STOP in (caught.value.hint or "")


def test_the_idle_clock_starts_at_ready_and_holds_at_zero_in_flight() -> None:
    clock = FakeClock()
    idle = IdleClock(clock)
    assert idle.idle_seconds() is None  # not ready yet
    idle.begin()
    idle.end()  # a request before the first ready starts nothing
    assert idle.idle_seconds() is None
    idle.start()
    clock.now += 7
    assert idle.idle_seconds() == 7
    idle.begin()
    clock.now += 100  # a long stream: held at 0 while it runs
    assert idle.idle_seconds() == 0 and idle.active == 1
    idle.end()
    assert idle.idle_seconds() == 0
    clock.now += 3
    assert idle.idle_seconds() == 3
    idle.start()  # ready again after a restart or a hang: the clock starts over
    assert idle.idle_seconds() == 0


def test_ready_again_after_a_hang_restarts_the_idle_clock_and_ready_twice_does_not(tmp_path: Path) -> None:
    clock = FakeClock()
    state = _state(tmp_path, clock, idle_stop=60)
    state.set_phase(Phase.ready)
    clock.now += 50
    state.set_phase(Phase.ready)  # no change of phase: the clock runs on
    assert state.idle.idle_seconds() == 50
    state.set_phase(Phase.unhealthy)
    clock.now += 500  # hung for longer than the idle stop, no request meanwhile
    state.set_phase(Phase.ready)
    assert state.idle.idle_seconds() == 0


def _state(tmp_path: Path, clock: FakeClock, **overrides: object) -> ServerState:
    config = ServerConfig.from_env({}, model_path="builtin://tiny-llm", cache_path=tmp_path, **overrides)
    return ServerState(build_plan(config), idle=IdleClock(clock))


def test_the_watcher_stops_once_idle_for_the_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    state = _state(tmp_path, clock, idle_stop=60)
    exits: list[int] = []
    watcher = IdleStop(state, 60, exits.append)
    assert not watcher.due() and watcher.next_check() == NOT_READY_POLL_S  # loading
    state.set_phase(Phase.ready)
    assert watcher.next_check() == 60
    clock.now += 40
    assert not watcher.due() and watcher.next_check() == 20
    state.idle.begin()  # a request inside the interval resets it
    clock.now += 30
    state.idle.end()
    clock.now += 50
    assert not watcher.due() and watcher.next_check() == 10
    state.set_phase(Phase.unhealthy)  # a hung engine is no idle one: it is not stopped as one
    clock.now += 20
    assert not watcher.due()
    state.set_phase(Phase.ready)  # back: the clock starts over
    assert not watcher.due() and watcher.next_check() == 60
    clock.now += 60
    assert watcher.due()
    with caplog.at_level("INFO", logger="nimctl.server"):
        watcher.stop()
    assert exits == [0] and state.draining
    [line] = [r.getMessage() for r in caplog.records if contract.IDLE_STOP_LOG_MARK in r.getMessage()]
    assert line.startswith(contract.IDLE_STOP_LOG_MARK) and f"{contract.IDLE_STOP}=1m" in line


def test_the_watcher_task_asks_for_exit_zero(tmp_path: Path) -> None:
    state = _state(tmp_path, FakeClock())  # a clock that never moves: the interval is what passes
    exits: list[int] = []

    async def scenario() -> None:
        watcher = IdleStop(state, 0.05, exits.append)
        state.set_phase(Phase.ready)
        state.idle._since = -1e9  # long ago
        await asyncio.wait_for(watcher.run(), timeout=5)

    asyncio.run(scenario())
    assert exits == [0]


def _metrics(prompt: float, generation: float) -> str:
    return (
        "# HELP vllm:prompt_tokens_total Prompt tokens.\n# TYPE vllm:prompt_tokens_total counter\n"
        f'vllm:prompt_tokens_total{{engine="0",model_name="m"}} {prompt}\n'
        "# HELP vllm:generation_tokens_total Generated tokens.\n# TYPE vllm:generation_tokens_total counter\n"
        f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {generation}\n'
        f'vllm:generation_tokens_total{{engine="1",model_name="m"}} {generation}\n'
    )


def test_counters_are_summed_over_label_sets() -> None:
    assert read_counters(_metrics(10, 4)) == (10, 8)
    assert read_counters("vllm:num_requests_running 1\n") is None
    assert read_counters("not metrics {{{") is None
    assert read_counters(_metrics(1, 1).replace("} 1", "} x")) is None
    longer = "vllm:prompt_tokens_total_by_source 99\n" + _metrics(10, 4)  # another metric's name
    assert read_counters(longer) == (10, 8)


def test_the_fetch_falls_back_to_the_whole_document() -> None:
    asked: list[str] = []

    async def filtered_gone(path: str) -> str | None:
        asked.append(path)
        return None if path == FILTERED_PATH else _metrics(1, 1)

    fetch = engine_fetch(filtered_gone, give_up_after=2)
    for _ in range(3):
        assert asyncio.run(fetch()) is not None
    # Two misses in a row: an engine without the filtered path is not asked for it again.
    assert asked == [FILTERED_PATH, FULL_PATH, FILTERED_PATH, FULL_PATH, FULL_PATH]

    asked.clear()
    answers = iter([None, _metrics(1, 1), _metrics(1, 1)])

    async def one_slow_answer(path: str) -> str | None:
        asked.append(path)
        return next(answers) if path == FILTERED_PATH else _metrics(1, 1)

    fetch = engine_fetch(one_slow_answer, give_up_after=2)
    for _ in range(3):
        assert asyncio.run(fetch()) is not None
    assert asked == [FILTERED_PATH, FULL_PATH, FILTERED_PATH, FILTERED_PATH]  # one miss is forgiven


def test_rates_over_the_last_ten_seconds() -> None:
    clock = FakeClock()
    rates = TokenRates(clock)
    assert rates.rates() is None
    rates.add(_metrics(0, 0))
    assert rates.rates() is None  # one sample is no rate
    for step in range(1, 11):  # every 2 s: 100 prompt and 20 generated tokens a second
        clock.now += 2
        rates.add(_metrics(200 * step, 20 * step))  # generation doubled by its two label sets
    assert rates.rates() == Rates(100, 20)
    clock.now += 2
    rates.add(_metrics(2000, 200))  # nothing new for 2 s: the 10 s window still sees the last 8 s
    assert rates.rates() == Rates(80, 16)
    assert len(rates) <= KEEP_S / 2 + 1  # older samples are dropped
    clock.now += 11
    assert rates.rates() is None  # the sampler stopped: no stale figures
    rates.add(_metrics(5, 1))  # counters went back: a new engine starts afresh
    assert len(rates) == 1 and rates.rates() is None


def test_the_sampler_samples_while_up_and_is_cancelled_cleanly() -> None:
    rates = TokenRates()
    fetched: list[int] = []
    up = True

    async def fetch() -> str | None:
        fetched.append(1)
        if len(fetched) == 2:
            raise RuntimeError("a failed fetch misses one sample")
        return _metrics(100 * len(fetched), 10 * len(fetched))

    async def scenario() -> None:
        nonlocal up
        task = asyncio.create_task(rates.sample_forever(fetch, lambda: up, interval=0.01))
        while len(rates) < 2:
            await asyncio.sleep(0.01)
        assert rates.rates() is not None
        up = False
        while len(rates):  # the engine went down: the samples are forgotten
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert len(fetched) >= 3


def test_a_bad_value_stops_nim_serve_at_start_with_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nimctl.cli.main import app

    env = {
        "NIM_CACHE_PATH": str(tmp_path),
        "NIM_MODEL_PATH": "builtin://tiny-vlm",
        contract.IDLE_STOP: "soon",
    }
    result = CliRunner().invoke(app, ["serve", "--dry-run"], env=env)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: invalid {contract.IDLE_STOP}='soon': 'soon' is not a duration: give {contract.DURATION_FORMS}"
    ]
    assert "Traceback" not in result.output
