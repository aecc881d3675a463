"""Fetching the model files in a child process that a stop can end at once.

A download or a built-in generation takes minutes and cannot be interrupted from a thread
(``asyncio.run`` would wait for the thread on SIGTERM). In a child process it can: the
front kills the child's process group when it stops, and the child dies with the front
if the front is killed (:mod:`nimctl.server.deathsig`), what it started too
(:mod:`nimctl.server.watchdog`). The child also keeps torch and
huggingface_hub out of the front's memory.

The child is ``python -m nimctl.server.fetch PARENT_PID URI CACHE``. Its stdout carries one
JSON line: the folder, or the error to report. What it prints on stderr (download progress,
library warnings) goes into the front's log line by line, so that JSONL logs stay JSONL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from nimctl.errors import ConfigError, NimctlError, RuntimeFailure
from nimctl.server import watchdog
from nimctl.server.deathsig import die_with_parent
from nimctl.server.model_source import ModelSource, parse_model_source

log = logging.getLogger("nimctl.fetch")

# Progress bars redraw their line (ending it with \r) many times a second: log one such a while.
PROGRESS_EVERY_S = 5.0
_LINE_END = re.compile(rb"\r\n|\n|\r")
_LONGEST_LINE = 1 << 16


async def fetch_model(source: ModelSource, cache: Path) -> Path:
    """The local folder of ``source``'s files, fetched into ``cache`` by a child process."""
    if source.kind == "local":
        return source.fetch(cache)  # only a check: nothing to wait for
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nimctl.server.fetch",
        str(os.getpid()),
        source.uri,
        str(cache),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own group: a stop reaches whatever it started too
    )
    watchdog.watch(process.pid)
    assert process.stdout is not None and process.stderr is not None
    relay = asyncio.create_task(_relay_output(process.stderr), name="fetch-output")
    try:
        output = await process.stdout.read()
        await process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(relay, 5)  # the last lines, usually there already
    finally:
        if process.returncode is None:  # cancelled: the front is stopping
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        watchdog.end(process.pid)
        relay.cancel()
    return _result(output, process.returncode, source.uri)


async def _relay_output(stream: asyncio.StreamReader) -> None:
    """Log the child's stderr line by line; a line ends at \n or \r\n, or at a lone \r where a
    progress bar redraws it (those are logged once every PROGRESS_EVERY_S)."""
    buffer = b""
    last_redraw = 0.0
    while chunk := await stream.read(_LONGEST_LINE):
        buffer += chunk
        while True:
            end = _LINE_END.search(buffer)
            if end is None and len(buffer) <= _LONGEST_LINE:
                break
            if end is not None and end.group() == b"\r" and end.end() == len(buffer):
                break  # perhaps the first half of a \r\n split between two reads
            cut, rest = (end.start(), end.end()) if end is not None else (len(buffer), len(buffer))
            line, redraw, buffer = buffer[:cut], end is not None and end.group() == b"\r", buffer[rest:]
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            if redraw:
                now = time.monotonic()
                if now - last_redraw < PROGRESS_EVERY_S:
                    continue
                last_redraw = now
            log.info("%s", text)
    if text := buffer.decode(errors="replace").strip():
        log.info("%s", text)


def _result(output: bytes, code: int | None, uri: str) -> Path:
    lines = output.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise RuntimeFailure(
            f"fetching {uri} failed: the fetch process exited with code {code} (its output is logged above)"
        )
    if "folder" in answer:
        return Path(answer["folder"])
    error = ConfigError if answer.get("config_error") else RuntimeFailure
    raise error(str(answer.get("error")), hint=answer.get("hint"))


def main(argv: Sequence[str]) -> int:
    parent, uri, cache = argv
    die_with_parent(int(parent))
    # The answer gets the real stdout; whatever the fetch prints (C libraries included) goes to stderr.
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        folder = parse_model_source(uri).fetch(Path(cache))
    except NimctlError as exc:
        result: dict[str, object] = {
            "error": exc.message,
            "hint": exc.hint,
            "config_error": isinstance(exc, ConfigError),
        }
        code = 1
    else:
        result = {"folder": str(folder)}
        code = 0
    answer.write(json.dumps(result) + "\n")
    answer.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
