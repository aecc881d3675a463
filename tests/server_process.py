"""Start ``nim-serve`` as a real process for tests, and watch it come up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

READY_TIMEOUT_S = float(os.environ.get("NIMCTL_TEST_READY_TIMEOUT", "600"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """One ``nim-serve`` child; ``observed`` records what the health endpoints said on the way up."""

    model: str
    cache: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    observed: list[tuple[int, int]] = field(default_factory=list)  # (live status, ready status)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        env = {
            **os.environ,
            "NIM_MODEL_PATH": self.model,
            "NIM_SERVER_PORT": str(self.port),
            "NIM_CACHE_PATH": str(self.cache),
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            **self.env,
        }
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nimctl", "serve", *self.args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @contextmanager
    def running(self) -> Iterator[ServerProcess]:
        """Started and ready for the block; stopped after it, whatever happened (a fixture's body)."""
        self.start()
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()

    def poll_health(self) -> tuple[int, int]:
        """(live, ready) status codes; 0 when the port does not answer."""
        codes = []
        for path in ("/v1/health/live", "/v1/health/ready"):
            try:
                codes.append(httpx.get(self.url + path, timeout=5).status_code)
            except httpx.TransportError:
                codes.append(0)
        return codes[0], codes[1]

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"nim-serve exited with {self.process.returncode}:\n{self.log_tail()}")
            live, ready = self.poll_health()
            self.observed.append((live, ready))
            if ready == 200:
                return
            time.sleep(0.5)  # poll interval; readiness itself is what ends the loop
        raise TimeoutError(f"not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 60) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def process_group_alive(pgid: int, wait: float = 5.0) -> bool:
    """Whether a live (non-zombie) process of group ``pgid`` remains after up to ``wait`` s.

    A SIGKILLed process takes a moment to go; zombies count as gone, since whether they are
    reaped depends on this machine's init, not on the code under test.
    """
    deadline = time.monotonic() + wait
    while True:
        alive = []
        for process in psutil.process_iter(["status"]):
            try:
                if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        if not alive or time.monotonic() > deadline:
            return bool(alive)
        time.sleep(0.1)


def engine_process(front_pid: int) -> psutil.Process:
    """The engine child of a front: the process running vLLM's OpenAI server module."""
    for child in psutil.Process(front_pid).children(recursive=False):
        if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
            return child
    raise LookupError(f"no engine child under pid {front_pid}")


def engine_metric(url: str, name: str) -> float:
    """The sum of an engine metric's samples (all label sets), read through the front's /v1/metrics."""
    text = httpx.get(url + "/v1/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))
