"""The supervised vLLM engine: one child process on a loopback-only port.

The child gets its own process group, so stopping it (or cleaning up after it crashed)
reaches every process it spawned. No part of it outlives a front killed with SIGKILL: the
child itself is asked to die with the front (``PR_SET_PDEATHSIG``, see
:mod:`nimctl.server.deathsig`), and the watchdog (:mod:`nimctl.server.watchdog`) ends the
processes the engine spawned, which that signal does not reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Mapping, Sequence

from nimctl.server import watchdog
from nimctl.server.deathsig import guarded
from nimctl.server.logs import TracebackCollapser

log = logging.getLogger("nimctl.engine")

ENGINE_MODULE = "vllm.entrypoints.openai.api_server"


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def engine_command(model: str, served_name: str, port: int | str, args: Sequence[str]) -> list[str]:
    """The exact command line of the engine.

    ``args`` come last so that they win over defaults; users cannot override the front's own
    flags through them (:func:`nimctl.server.engine_args.check_user_engine_args`).
    """
    return [
        sys.executable,
        "-m",
        ENGINE_MODULE,
        "--model",
        model,
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]


class EngineProcess:
    """Start, watch and stop the engine child; keeps the last lines it printed."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], *, tail_lines: int = 200) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    async def start(self) -> None:
        # The launcher execs the engine in place: same pid, same group, the engine's command line.
        self._process = await asyncio.create_subprocess_exec(
            *guarded(self.command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        watchdog.watch(self._process.pid)
        self._reader = asyncio.create_task(self._read_output(), name="engine-output")
        log.info("engine started (pid %s): %s", self._process.pid, " ".join(self.command))

    async def _read_output(self) -> None:
        """Log the engine's output; keep its last lines as they came (for the report if it dies)."""
        assert self._process and self._process.stdout
        # Below DEBUG a traceback is logged as its exception line: each engine 500 printed ~9 KB.
        collapser = None if log.isEnabledFor(logging.DEBUG) else TracebackCollapser()
        while True:
            try:
                line = await self._process.stdout.readline()
            except ValueError:  # longer than the stream's limit; it was dropped. Reading must go on,
                log.info("(part of an engine output line over 64 KiB left out)")  # or the engine blocks
                continue
            if not line:
                break
            text = line.decode(errors="replace").rstrip()
            self.tail.append(text)
            for shown in collapser.feed(text) if collapser else [text]:
                log.info("%s", shown)
        for shown in collapser.flush() if collapser else []:
            log.info("%s", shown)

    async def wait(self) -> int:
        """Wait for the engine to exit, end what it spawned, and return its exit code."""
        assert self._process
        code = await self._process.wait()
        # Its children hold the output pipe open: they go first, then the pipe drains.
        self._kill_group(signal.SIGKILL)
        watchdog.end(self._process.pid)  # and any that left the group
        if self._reader:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._reader, 5)
        return code

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the whole group, then SIGKILL what is left after ``timeout``."""
        if self._process is None:
            return
        if self._process.returncode is None:
            self._kill_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._process.wait(), timeout)
            except TimeoutError:
                log.warning("engine did not stop within %.0f s; killing it", timeout)
        self._kill_group(signal.SIGKILL)
        watchdog.end(self._process.pid)
        with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
            await asyncio.wait_for(self._process.wait(), 5)
        if self._reader:
            self._reader.cancel()

    def _kill_group(self, sig: signal.Signals) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)

    def last_lines(self, count: int = 20) -> list[str]:
        return list(self.tail)[-count:]
