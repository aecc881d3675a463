"""Idle stop and token rates on the real front and vLLM CPU engine.

* A ``nim-serve`` of its own with ``NIMCTL_IDLE_STOP`` a few seconds: health probes and metrics
  scrapes all along do not keep it alive, a request inside the interval resets it, then it exits 0
  with its one log line, its engine gone with it.
* The session server (tests/conftest.py ``nim_server``) shows tokens per second after some load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nimctl import contract
from nimctl.server.token_rates import FILTERED_PATH, GENERATION_COUNTER, PROMPT_COUNTER
from tests.server_process import ServerProcess, engine_process

pytestmark = pytest.mark.engine

# Long enough that a slow machine still gets the request in before the first deadline.
IDLE_S = 10.0
MODEL = "tiny-vlm"


def _gauges(url: str) -> dict[str, float]:
    """The front's gauges; empty when it no longer answers."""
    try:
        text = httpx.get(url + "/v1/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    return {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(text)
        if family.type == "gauge" and family.samples and family.name.startswith("nimctl_")
    }


def _until(
    condition: Callable[[], bool], timeout: float, what: str, poll: Callable[[], object] = lambda: None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not in {timeout:g} s: {what}"
        poll()
        time.sleep(0.2)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_idle_stop_after_the_interval_reset_by_a_request(model_cache: Path, tmp_path: Path) -> None:
    server = ServerProcess(
        f"builtin://{MODEL}",
        model_cache,
        tmp_path / "nim-serve.log",
        env={contract.IDLE_STOP: f"{IDLE_S:g}s"},
    )
    server.start()
    try:
        server.wait_ready()
        assert server.process is not None
        tree = [
            psutil.Process(server.process.pid),
            *psutil.Process(server.process.pid).children(recursive=True),
        ]
        assert engine_process(server.process.pid) in tree
        gauges = _gauges(server.url)
        assert gauges["nimctl_idle_stop_seconds"] == IDLE_S

        # Scrapes all along: the idle time grows through them (they are no use of the model).
        _until(lambda: _gauges(server.url).get("nimctl_idle_seconds", 0) >= 2, IDLE_S, "idle for 2 s")
        idle_before = _gauges(server.url).get("nimctl_idle_seconds", 0)
        idle_seen = time.monotonic()  # the clock started 2 s or more before: it was due by idle_seen + 8
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
        sent = time.monotonic()
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0
        )
        assert reply.choices
        assert _gauges(server.url)["nimctl_idle_seconds"] < idle_before  # the request reset it

        # Past the first deadline (idle_seen + 8 at the latest), probed and scraped all the while:
        # still ready, since the request moved the deadline to sent + IDLE_S or later.
        _until(
            lambda: time.monotonic() > idle_seen + IDLE_S - 1.5,
            IDLE_S,
            "past the first deadline",
            server.poll_health,
        )
        assert server.poll_health() == (200, 200), server.log_tail()

        # Then it stops itself, whatever the probes and scrapes do meanwhile.
        def polled() -> None:
            server.poll_health()
            _gauges(server.url)

        _until(lambda: server.process.poll() is not None, 120, "the idle stop", polled)  # type: ignore[union-attr]
        ended = time.monotonic()
        assert server.process.returncode == 0, server.log_tail()
        assert ended - sent >= IDLE_S  # not before the reset interval ran out
        log = server.log_path.read_text(errors="replace")
        [line] = [line for line in log.splitlines() if contract.IDLE_STOP_LOG_MARK in line]
        assert f"{contract.IDLE_STOP}={IDLE_S:g}s" in line, line
        _until(lambda: not any(_alive(p) for p in tree), 10, "no process left")
    finally:
        server.stop()


def test_token_rates_on_the_session_server(nim_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=nim_server.url + "/v1", api_key="none", max_retries=0, timeout=120)

    def load() -> None:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Count to ten."}], max_tokens=16, temperature=0
        )

    # Two samples 2 s apart with tokens between them: the gauges appear with generated tokens counted.
    _until(
        lambda: _gauges(nim_server.url).get("nimctl_generation_tokens_per_second", 0) > 0,
        30,
        "a generation rate",
        load,
    )
    gauges = _gauges(nim_server.url)
    assert gauges["nimctl_prompt_tokens_per_second"] > 0
    assert "nimctl_idle_stop_seconds" not in gauges  # the session server has no idle stop

    # The sampler's cheap path: this engine renders the two counters alone (else the sampler
    # falls back to the whole ~640-line document, which works but costs the engine more).
    if nim_server.process is not None:  # not a server given by NIMCTL_TEST_SERVER_PORT
        argv = engine_process(nim_server.process.pid).cmdline()
        port = argv[argv.index("--port") + 1]
        text = httpx.get(f"http://127.0.0.1:{port}{FILTERED_PATH}", timeout=10).text
        names = {
            line.split("{")[0].split(" ")[0]
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert names == {PROMPT_COUNTER, GENERATION_COUNTER}, text[:500]
