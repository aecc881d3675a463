"""A flood of bad requests does not flood the log.

Each engine 500 printed a traceback of about 9 KB into the front's log (200 MB in a 40-second
flood). Below DEBUG a traceback is logged as its exception line, and a message repeated within
a window is logged a few times and then counted in one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nimctl.server.engine import EngineProcess
from nimctl.server.logs import REPEAT_BURST, REPEAT_WINDOW_S, RepeatFilter, TracebackCollapser
from tests.conftest import TEST_MODEL
from tests.server_process import ServerProcess, engine_process

FLOOD = 200
BAD = {"prompt": "x", "structured_outputs": 7}  # vLLM 500s on it: 'int' object has no attribute 'get'

# The shape of vLLM's output for one such 500, frames cut down.
ENGINE_500 = """\
INFO:     127.0.0.1:57728 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error
ERROR:    Exception in ASGI application
Traceback (most recent call last):
  File "/venv/site-packages/uvicorn/protocols/http/httptools_impl.py", line 422, in run_asgi
    result = await app(  # type: ignore[func-returns-value]
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/venv/site-packages/vllm/entrypoints/openai/completion/protocol.py", line 487, in <genexpr>
    else structured_outputs_kwargs.get(k)
         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
AttributeError: 'int' object has no attribute 'get'
INFO:     127.0.0.1:57730 - "GET /health HTTP/1.1" 200 OK"""


def _collapse(text: str) -> list[str]:
    collapser = TracebackCollapser()
    shown = [out for line in text.splitlines() for out in collapser.feed(line)]
    return shown + collapser.flush()


def test_a_traceback_is_logged_as_its_exception_line() -> None:
    shown = _collapse(ENGINE_500)
    assert shown[:2] == ENGINE_500.splitlines()[:2]
    assert shown[2].startswith(
        "AttributeError: 'int' object has no attribute 'get' [7 traceback lines left out;"
    )
    assert shown[3:] == ENGINE_500.splitlines()[-1:]


def test_chained_prefixed_and_grouped_tracebacks_collapse_too() -> None:
    chained = """\
(APIServer pid=7) ERROR 12-03 05:35:03 [serving.py:12] Error in preprocessing prompt inputs
(APIServer pid=7) Traceback (most recent call last):
(APIServer pid=7)   File "a.py", line 1, in f
(EngineCore pid=9) INFO 12-03 05:35:03 [core.py:1] a line of another process, in between
(APIServer pid=7) KeyError: 'x'
(APIServer pid=7)
(APIServer pid=7) The above exception was the direct cause of the following exception:
(APIServer pid=7)
(APIServer pid=7) Traceback (most recent call last):
(APIServer pid=7)   File "b.py", line 2, in g
(APIServer pid=7) vllm.v1.engine.exceptions.EngineGenerateError: bad input"""
    shown = _collapse(chained)
    assert shown[0].endswith("Error in preprocessing prompt inputs")
    assert shown[1].endswith("a line of another process, in between")
    assert shown[2].startswith("(APIServer pid=7) KeyError: 'x' [2 traceback lines")
    assert shown[3].startswith("(APIServer pid=7) vllm.v1.engine.exceptions.EngineGenerateError: bad input [")
    assert len(shown) == 4

    grouped = """\
  + Exception Group Traceback (most recent call last):
  |   File "c.py", line 3, in h
  | ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception)
  +-+---------------- 1 ----------------
    | Traceback (most recent call last):
    |   File "d.py", line 4, in i
    | ValueError: the inner one
    +------------------------------------
INFO:     the next line"""
    shown = _collapse(grouped)
    assert shown[0].startswith("ValueError: the inner one [8 traceback lines")
    assert shown[1] == "INFO:     the next line"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(message: str) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "nimctl.engine", "levelno": logging.INFO, "msg": message})


def test_a_repeated_message_is_logged_a_few_times_then_counted_once() -> None:
    clock, counted = _Clock(), []
    repeats = RepeatFilter(counted.append, clock=clock)
    passed = []
    for index in range(50):  # the port differs: a repeat all the same
        clock.now += 0.1
        record = _record(f'INFO:     127.0.0.1:{50000 + index} - "POST /v1/completions HTTP/1.1" 500')
        if repeats.filter(record):
            passed.append(record)
    assert repeats.filter(_record("something else"))  # its own count
    repeats.flush()
    assert len(passed) == REPEAT_BURST and not counted  # the window is still open
    clock.now += REPEAT_WINDOW_S
    repeats.flush()
    assert [r.getMessage() for r in counted] == [
        'INFO:     127.0.0.1:50049 - "POST /v1/completions HTTP/1.1" 500'
        f" (repeated {50 - REPEAT_BURST} more times in the last {REPEAT_WINDOW_S:.0f} s)"
    ]
    assert repeats.filter(counted[0])  # a count line is never held back itself
    assert repeats.filter(passed[0])  # a new window


def _engine_records(command: str, level: int, caplog: pytest.LogCaptureFixture) -> list[str]:
    async def run() -> int:
        engine = EngineProcess([sys.executable, "-c", command], dict(os.environ))
        await engine.start()
        return await engine.wait()

    with caplog.at_level(level, logger="nimctl.engine"):
        asyncio.run(run())
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "nimctl.engine" and "started" not in r.getMessage()
    ]


def test_debug_logs_the_engines_tracebacks_whole(caplog: pytest.LogCaptureFixture) -> None:
    command = "def f(): raise ValueError('bad')\nf()"
    assert _engine_records(command, logging.INFO, caplog)[0].startswith("ValueError: bad [3 traceback lines")
    caplog.clear()
    whole = _engine_records(command, logging.DEBUG, caplog)
    assert whole[0] == "Traceback (most recent call last):" and whole[-1] == "ValueError: bad"


def test_an_overlong_output_line_does_not_stop_the_relay(caplog: pytest.LogCaptureFixture) -> None:
    shown = _engine_records("print('x' * 300_000); print('after')", logging.INFO, caplog)
    assert shown[-1] == "after"


@pytest.fixture
def server(model_cache: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(TEST_MODEL, model_cache, tmp_path / "nim-serve.log").start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def _bad_request_target(server: ServerProcess, model: str) -> str:
    """The front when it still relays the bad request to the engine; else the engine's own port."""
    if (
        httpx.post(server.url + "/v1/completions", json={"model": model, **BAD}, timeout=30).status_code
        == 500
    ):
        return server.url
    assert server.process is not None
    command = engine_process(server.process.pid).cmdline()
    return f"http://127.0.0.1:{command[command.index('--port') + 1]}"


@pytest.mark.engine
def test_a_flood_of_engine_500s_grows_the_log_by_little(server: ServerProcess) -> None:
    model = httpx.get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"]
    target = _bad_request_target(server, model)
    before = server.log_path.stat().st_size
    # A connection each: the engine's uvicorn closes one after the exception, which a reuse would race.
    with httpx.Client(timeout=30, headers={"Connection": "close"}) as client:
        statuses = [
            client.post(target + "/v1/completions", json={"model": model, **BAD}).status_code
            for _ in range(FLOOD)
        ]
    assert set(statuses) == {500}, statuses
    # The count lines come when the window closes: within REPEAT_WINDOW_S and a flush.
    deadline = time.monotonic() + REPEAT_WINDOW_S + 30
    while time.monotonic() < deadline:
        added = server.log_path.read_bytes()[before:].decode(errors="replace")
        counts = [line for line in added.splitlines() if "more times in the last" in line]
        if any("AttributeError" in line for line in counts):
            break
        time.sleep(0.5)
    collapsed = [line for line in counts if "AttributeError" in line and "traceback lines left out" in line]
    assert collapsed, added[-3000:]
    assert "Traceback" not in added, added[-3000:]
    per_request = len(added.encode()) / FLOOD
    assert per_request < 200, f"{per_request:.0f} bytes of log per bad request"
