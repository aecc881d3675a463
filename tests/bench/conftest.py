"""The stand-in server (tests/bench/standin.py) as a fixture: ``standin("--ttft", "0.05")`` -> its URL."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.server_process import free_port

ROOT = Path(__file__).resolve().parents[2]


class StandIn:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.standin", "--port", str(self.port), *args], cwd=ROOT
        )
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, "the stand-in server exited"
            try:
                httpx.post(self.url + "/tokenize", json={"prompt": "x"}, timeout=2)
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the stand-in server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def standin() -> Iterator[Callable[..., StandIn]]:
    started: list[StandIn] = []

    def start(*args: str) -> StandIn:
        server = StandIn(*args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"
