"""The front's children without an engine: the fetch child, dying with the front, the port at launch.

A "hung hub" stands in for a slow download: it accepts connections and never answers, so
an ``hf://`` fetch pointed at it (``HF_ENDPOINT``) hangs until it is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from nimctl.errors import ModelUnavailableError, RuntimeFailure
from nimctl.server import supervisor as supervisor_module
from nimctl.server.config import ServerConfig
from nimctl.server.fetch import _relay_output, fetch_model
from nimctl.server.plan import build_plan
from nimctl.server.proxy import EngineProxy
from nimctl.server.state import Phase, ServerState
from nimctl.server.supervisor import Supervisor
from nimctl.store.source import parse_model_source
from tests.server_process import ServerProcess, process_group_alive

SLOW_MODEL = "hf://nimctl-test/slow"
FETCH_MODULE = "nimctl.server.fetch"


class HungHub:
    """Accepts connections and holds them open without a word; ``connected`` is set on the first."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connected = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)
            self.connected.set()

    def close(self) -> None:
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.fixture
def hung_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HungHub]:
    hub = HungHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a CI proxy must not take the hub's place
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "300")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "300")
    yield hub
    hub.close()


def _child_running(parent_pid: int, module: str, timeout: float = 30) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(parent_pid).children():
            try:
                if module in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    raise LookupError(f"no {module} child under {parent_pid}")


def test_a_stop_during_the_fetch_ends_it_at_once(hung_hub: HungHub, tmp_path: Path) -> None:
    async def scenario() -> tuple[psutil.Process, float]:
        task = asyncio.create_task(fetch_model(parse_model_source(SLOW_MODEL), tmp_path))
        assert await asyncio.to_thread(hung_hub.connected.wait, 30), "the fetch never reached the hub"
        child = _child_running(os.getpid(), FETCH_MODULE)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return child, time.monotonic() - started

    child, took = asyncio.run(scenario())
    assert took < 5
    assert not process_group_alive(child.pid)


def _offline_cache(cache: Path, repo: str) -> None:
    commit = "a" * 40
    repo_dir = cache / "huggingface" / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    (repo_dir / "snapshots" / commit).mkdir(parents=True)
    (repo_dir / "snapshots" / commit / "config.json").write_text("{}")


def test_the_fetch_child_reports_its_folder_or_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _offline_cache(tmp_path, "org/model")
    folder = asyncio.run(fetch_model(parse_model_source("hf://org/model"), tmp_path))
    assert (folder / "config.json").is_file()
    # The child's error arrives as the same kind of nimctl error, with its exit code (11).
    with pytest.raises(ModelUnavailableError, match="hf://org/missing is not in the cache") as raised:
        asyncio.run(fetch_model(parse_model_source("hf://org/missing"), tmp_path))
    assert raised.value.hint and "nimctl pull hf://org/missing" in raised.value.hint


def test_an_offline_fetch_reads_the_cache_and_never_the_network(hung_hub: HungHub, tmp_path: Path) -> None:
    """NIM_DISABLE_MODEL_DOWNLOAD's path: with a hub that would hang any request, offline answers at once."""
    _offline_cache(tmp_path, "org/model")
    folder = asyncio.run(fetch_model(parse_model_source("hf://org/model"), tmp_path, offline=True))
    assert (folder / "config.json").is_file()
    with pytest.raises(ModelUnavailableError, match="hf://org/missing is not in the cache"):
        asyncio.run(fetch_model(parse_model_source("hf://org/missing"), tmp_path, offline=True))
    assert not hung_hub.connected.is_set()


def test_the_fetch_childs_output_is_logged_line_by_line_with_progress_thinned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def relay() -> None:
        stream = asyncio.StreamReader()
        stream.feed_data(b"a warning\n 10%|#   \r 20%|##  \r 30%|### ")
        stream.feed_data(b"\r100%|####\nwarn one\r\nwarn two\r")  # CRLF lines are lines, not redraws,
        stream.feed_data(b"\nwarn three\r\ndone")  # also when a read splits one
        stream.feed_eof()
        await _relay_output(stream)

    with caplog.at_level(logging.INFO, logger="nimctl.fetch"):
        asyncio.run(relay())
    assert [r.getMessage() for r in caplog.records if r.name == "nimctl.fetch"] == [
        "a warning",
        "10%|#",
        "100%|####",
        "warn one",
        "warn two",
        "warn three",
        "done",
    ]


_FETCHING_FRONT = """
import asyncio, sys
from pathlib import Path
from nimctl.server.fetch import fetch_model
from nimctl.store.source import parse_model_source
asyncio.run(fetch_model(parse_model_source(sys.argv[1]), Path(sys.argv[2])))
"""

_ENGINE_FRONT = """
import asyncio, os, sys, time
from nimctl.server.engine import EngineProcess
async def main():
    engine = EngineProcess([sys.executable, "-c", "import time; time.sleep(120)"], dict(os.environ))
    await engine.start()
    print(engine.pid, flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""


def test_the_fetch_child_dies_with_a_killed_front(hung_hub: HungHub, tmp_path: Path) -> None:
    front = subprocess.Popen([sys.executable, "-c", _FETCHING_FRONT, SLOW_MODEL, str(tmp_path)])
    try:
        assert hung_hub.connected.wait(30), "the fetch never reached the hub"
        child = _child_running(front.pid, FETCH_MODULE)
        front.kill()
        front.wait(10)
        assert not process_group_alive(child.pid)
    finally:
        front.kill()


def test_the_engine_runs_in_place_of_its_launcher_and_dies_with_a_killed_front() -> None:
    front = subprocess.Popen([sys.executable, "-c", _ENGINE_FRONT], stdout=subprocess.PIPE, text=True)
    try:
        assert front.stdout is not None
        engine = psutil.Process(int(front.stdout.readline()))
        deadline = time.monotonic() + 10
        while "nimctl.server.deathsig" in " ".join(engine.cmdline()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "time.sleep(120)" in engine.cmdline()[-1]  # exec'd: same pid, the engine's command line
        assert os.getpgid(engine.pid) == engine.pid  # a group of its own, for the group kill on stop
        front.kill()
        front.wait(10)
        assert not process_group_alive(engine.pid)
    finally:
        front.kill()


def test_sigterm_while_fetching_exits_zero_at_once(hung_hub: HungHub, tmp_path: Path) -> None:
    server = ServerProcess(SLOW_MODEL, tmp_path / "cache", tmp_path / "nim-serve.log").start()
    assert server.process is not None
    try:
        assert hung_hub.connected.wait(60), server.log_tail()
        child = _child_running(server.process.pid, FETCH_MODULE)
        assert server.poll_health() == (200, 503)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(15) == 0, server.log_tail()
        assert time.monotonic() - started < 10
        assert not process_group_alive(child.pid)
    finally:
        server.stop()


def test_the_engine_port_is_chosen_after_the_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    commands: list[list[str]] = []

    async def fake_fetch(source: object, cache: Path, **options: object) -> Path:
        events.append("fetch")
        return tmp_path / "model"

    def fake_port() -> int:
        events.append("port")
        return 4321

    class StoppingEngine:
        def __init__(self, command: list[str], env: dict[str, str]) -> None:
            commands.append(command)

        async def start(self) -> None:
            raise RuntimeFailure("the test stops here")

    monkeypatch.setattr(supervisor_module, "fetch_model", fake_fetch)
    monkeypatch.setattr(supervisor_module, "free_loopback_port", fake_port)
    monkeypatch.setattr(supervisor_module, "EngineProcess", StoppingEngine)
    config = ServerConfig.from_env({}, model_path="builtin://tiny-llm", cache_path=tmp_path)
    state = ServerState(build_plan(config, environ={}))
    assert state.engine_port is None and state.engine_url is None

    async def bring_up() -> None:
        await Supervisor(state, EngineProxy(state), lambda code: None)._bring_up()

    asyncio.run(bring_up())
    assert events == ["fetch", "port"]
    assert commands[0][commands[0].index("--port") + 1] == "4321"
    assert state.engine_url == "http://127.0.0.1:4321"
    assert state.phase is Phase.failed


def test_deathsig_launcher_refuses_a_bad_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nimctl.server.deathsig", "1"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "usage" in done.stderr
