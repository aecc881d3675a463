"""Nothing the front started outlives a front killed with SIGKILL: not the engine, not its workers.

``PR_SET_PDEATHSIG`` reaches only the engine's top process; vLLM's EngineCore and the other
processes it spawns are handed to PID 1 when their parent dies. The watchdog
(:mod:`nimctl.server.watchdog`) ends them. Each engine test reads the whole tree under the front
just before the kill and checks every process of it, the watchdog included.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from nimctl.server.watchdog import SCAN_FIRST_S
from tests.conftest import TEST_MODEL
from tests.server_process import ServerProcess, engine_process

GONE_WITHIN_S = 5.0

# A front whose "engine" starts a process in a session of its own (as some vLLM launchers do):
# neither the engine's group kill nor its session reaches that one, only its recorded ancestry.
_LEAVING_FRONT = """
import asyncio, os, sys
from nimctl.server.engine import EngineProcess
LEAVER = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
LEAVER += "start_new_session=True); time.sleep(120)"
async def main():
    engine = EngineProcess([sys.executable, "-c", LEAVER], dict(os.environ))
    await engine.start()
    print(engine.pid, flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""


@pytest.fixture
def server(model_cache: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(TEST_MODEL, model_cache, tmp_path / "nim-serve.log").start()
    try:
        yield process
    finally:
        process.stop()


def _alive(processes: list[psutil.Process]) -> list[str]:
    """Those still running; a zombie counts as gone (reaping it is this machine's init's business)."""
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return left


def _kill_front_and_check(server: ServerProcess, tree: list[psutil.Process]) -> None:
    assert server.process is not None
    server.process.kill()
    server.process.wait(10)
    deadline = time.monotonic() + GONE_WITHIN_S
    while (left := _alive(tree)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for process in tree:  # a failing run must not leave gigabytes behind on the machine
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    assert not left, f"alive {GONE_WITHIN_S:.0f} s after the front's SIGKILL:\n" + "\n".join(left)


def _engine_with_workers(front_pid: int, deadline: float) -> psutil.Process:
    """The engine, once it has spawned at least one process of its own (EngineCore)."""
    while time.monotonic() < deadline:
        try:
            engine = engine_process(front_pid)
            if engine.children(recursive=True):
                return engine
        except (LookupError, psutil.NoSuchProcess):
            pass
        time.sleep(0.1)
    raise TimeoutError("the engine never spawned a worker")


def test_a_process_that_left_the_engines_group_and_session_dies_with_the_front() -> None:
    front = subprocess.Popen([sys.executable, "-c", _LEAVING_FRONT], stdout=subprocess.PIPE, text=True)
    tree: list[psutil.Process] = []
    try:
        assert front.stdout is not None
        engine = psutil.Process(int(front.stdout.readline()))
        deadline = time.monotonic() + 30
        while not (leavers := engine.children()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leavers, "the stand-in engine started nothing"
        leaver = leavers[0]
        assert os.getsid(leaver.pid) == leaver.pid != engine.pid
        # The watchdog learns a descendant's ancestry by scanning /proc (nothing to poll from
        # outside): one born t s after its child started is known by 2 t + SCAN_FIRST_S.
        born_after = leaver.create_time() - engine.create_time()
        known_by = engine.create_time() + 2 * born_after + SCAN_FIRST_S + 1.0
        while time.time() < known_by:
            time.sleep(0.1)
        tree = psutil.Process(front.pid).children(recursive=True)
        assert leaver in tree
        front.kill()
        front.wait(10)
        deadline = time.monotonic() + GONE_WITHIN_S
        while (left := _alive(tree)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, "\n".join(left)
    finally:
        front.kill()
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


@pytest.mark.engine
def test_sigkill_of_a_ready_front_leaves_no_process_behind(server: ServerProcess) -> None:
    server.wait_ready()
    assert server.process is not None
    tree = psutil.Process(server.process.pid).children(recursive=True)
    engine = engine_process(server.process.pid)
    assert len(engine.children(recursive=True)) >= 1, "expected vLLM's EngineCore under the engine"
    _kill_front_and_check(server, tree)


@pytest.mark.engine
def test_sigkill_while_the_model_loads_leaves_no_process_behind(server: ServerProcess) -> None:
    assert server.process is not None
    _engine_with_workers(server.process.pid, time.monotonic() + 300)
    tree = psutil.Process(server.process.pid).children(recursive=True)
    assert server.poll_health()[1] != 200, "ready already: this would be the other test"
    _kill_front_and_check(server, tree)
    assert "ready:" not in server.log_path.read_text(errors="replace")
