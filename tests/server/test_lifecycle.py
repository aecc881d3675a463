"""Supervision on real processes: engine death, SIGTERM drain, and no orphans either way.

These start their own servers (tiny-llm served through an offline ``hf://`` cache, which
also proves the Hugging Face loading path end to end).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.server_process import ServerProcess, engine_process, process_group_alive

pytestmark = pytest.mark.engine
HF_REPO = "nimctl-test/tiny-llm"


def _hf_cache_with(model_dir: Path, cache: Path, repo: str) -> None:
    """Lay ``model_dir`` out as huggingface_hub's cache holds a downloaded snapshot."""
    commit = "0" * 40
    repo_dir = cache / "huggingface" / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    shutil.copytree(model_dir, repo_dir / "snapshots" / commit, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("hf-cache")
    generated = subprocess.run(
        [sys.executable, "-m", "nimctl.models.builtin", "tiny-llm", str(cache / "builtin")],
        capture_output=True,
        text=True,
        check=True,
    )
    _hf_cache_with(Path(generated.stdout.strip().splitlines()[-1]), cache, HF_REPO)
    return cache


def _server(hf_cache: Path, tmp_path: Path) -> ServerProcess:
    return ServerProcess(
        f"hf://{HF_REPO}",
        hf_cache,
        tmp_path / "nim-serve.log",
        env={
            "HF_HUB_OFFLINE": "1",
            "NIM_SERVED_MODEL_NAME": "tiny-llm",
            "NIM_PASSTHROUGH_ARGS": "--dtype float32 --max-model-len 1024 --enforce-eager",
            "NIMCTL_SHUTDOWN_TIMEOUT": "20",
        },
    )


@pytest.fixture
def running(hf_cache: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    server = _server(hf_cache, tmp_path)
    with server.running():
        yield server


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_engine_death_turns_ready_503_and_the_front_exits_non_zero(running: ServerProcess) -> None:
    assert running.process is not None
    engine = engine_process(running.process.pid)
    everything = [engine, *_descendants(engine.pid)]
    engine.send_signal(signal.SIGKILL)

    seen_not_ready = False
    deadline = time.monotonic() + 30
    while running.process.poll() is None and time.monotonic() < deadline:
        _, ready = running.poll_health()
        seen_not_ready |= ready == 503
        time.sleep(0.1)
    assert seen_not_ready, "ready never turned 503 after the engine died"
    assert running.process.wait(30) != 0
    assert "engine exited with code" in running.log_tail(80)
    assert not process_group_alive(engine.pid)
    assert not [p for p in everything if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_sigterm_finishes_in_flight_stream_then_exits_zero(running: ServerProcess) -> None:
    assert running.process is not None
    engine = engine_process(running.process.pid)
    received: list[str] = []
    first_chunk = threading.Event()

    def stream() -> None:
        payload = {
            "model": "tiny-llm",
            "messages": [{"role": "user", "content": "Count slowly."}],
            "max_tokens": 200,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.stream("POST", running.url + "/v1/chat/completions", json=payload, timeout=60) as response:
            for line in response.iter_lines():
                received.append(line)
                first_chunk.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_chunk.wait(60)
    os.kill(running.process.pid, signal.SIGTERM)
    reader.join(60)
    assert "data: [DONE]" in received  # the in-flight stream ran to its end
    assert running.process.wait(60) == 0
    assert not process_group_alive(engine.pid)
