"""Fetching the model files in a child process that a stop can end at once.

A download or a built-in generation takes minutes and cannot be interrupted from a thread
(``asyncio.run`` would wait for the thread on SIGTERM). In a child process it can: the
front kills the child's process group when it stops, and the child dies with the front
if the front is killed (:mod:`nimctl.server.deathsig`), what it started too
(:mod:`nimctl.server.watchdog`). The child also keeps torch and
huggingface_hub out of the front's memory.

The child is ``python -m nimctl.server.fetch PARENT_PID URI CACHE [--offline]``. Its stdout
carries JSON lines: ``{"progress": {...}}`` (a :class:`~nimctl.store.progress.FetchProgress`,
at most every 0.25 s) while it downloads, then one last line, the folder or the error to report
(with the kind of nimctl error, so that the front raises the same one). What it prints on
stderr (library warnings) goes into the front's log line by line, so that JSONL logs stay JSONL.
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
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nimctl.errors import (
    ConfigError,
    DiskFullError,
    IntegrityError,
    ModelUnavailableError,
    NimctlError,
    RuntimeFailure,
)
from nimctl.server import watchdog
from nimctl.server.deathsig import die_with_parent
from nimctl.store.progress import FetchProgress, ProgressListener
from nimctl.store.source import ModelSource, parse_model_source

log = logging.getLogger("nimctl.fetch")

# Progress bars redraw their line (ending it with \r) many times a second: log one such a while.
# The download's own progress (the JSON lines) is logged as often.
PROGRESS_EVERY_S = 5.0
OFFLINE_FLAG = "--offline"
_LINE_END = re.compile(rb"\r\n|\n|\r")
_LONGEST_LINE = 1 << 16
# The errors the child reports by kind, so that the front raises the same one (and exits with its
# code); any other nimctl error reaches the front as a RuntimeFailure with the same words.
_ERROR_KINDS: dict[str, type[NimctlError]] = {
    kind.__name__: kind
    for kind in (ModelUnavailableError, DiskFullError, IntegrityError, ConfigError, RuntimeFailure)
}


async def fetch_model(
    source: ModelSource, cache: Path, *, offline: bool = False, on_progress: ProgressListener | None = None
) -> Path:
    """The local folder of ``source``'s files, fetched into ``cache`` by a child process.

    ``offline``: only the cache, never the network (NIM_DISABLE_MODEL_DOWNLOAD); ``on_progress``
    is called in the event loop with each progress the child reports.
    """
    if source.kind == "local":
        return source.fetch(cache)  # only a check: nothing to wait for
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nimctl.server.fetch",
        str(os.getpid()),
        source.uri,
        str(cache),
        *([OFFLINE_FLAG] if offline else []),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own group: a stop reaches whatever it started too
    )
    watchdog.watch(process.pid)
    assert process.stdout is not None and process.stderr is not None
    relay = asyncio.create_task(_relay_output(process.stderr), name="fetch-output")
    try:
        answer = await _read_answer(process.stdout, source.uri, on_progress)
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
    return _result(answer, process.returncode, source.uri)


async def _read_answer(
    stream: asyncio.StreamReader, uri: str, on_progress: ProgressListener | None
) -> dict[str, Any] | None:
    """Hand each progress line to ``on_progress`` (and to the log, thinned); the last other line
    is the answer."""
    answer: dict[str, Any] | None = None
    last_logged = 0.0
    while line := await stream.readline():
        try:
            message = json.loads(line)
        except ValueError:
            continue  # not ours: what the child prints goes to stderr, but a stray line must not stop us
        if not isinstance(message, dict):
            continue
        if not isinstance(message.get("progress"), dict):
            answer = message
            continue
        try:
            progress = FetchProgress.from_dict(message["progress"])
        except (KeyError, TypeError, ValueError):
            continue
        now = time.monotonic()
        if now - last_logged >= PROGRESS_EVERY_S or progress.fraction >= 1.0:
            last_logged = now
            log.info("fetching %s: %s", uri, progress.describe())
        if on_progress is not None:
            on_progress(progress)
    return answer


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


def _result(answer: dict[str, Any] | None, code: int | None, uri: str) -> Path:
    if answer is None:
        raise RuntimeFailure(
            f"fetching {uri} failed: the fetch process exited with code {code} (its output is logged above)"
        )
    if "folder" in answer:
        return Path(answer["folder"])
    error = _ERROR_KINDS.get(str(answer.get("kind")), RuntimeFailure)
    raise error(str(answer.get("error")), hint=answer.get("hint"))


def _kind(exc: NimctlError) -> str:
    """The name of the nearest class of ``exc`` the front re-raises (a ManifestError is a ConfigError)."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _ERROR_KINDS and _ERROR_KINDS[cls.__name__] is cls:
            return cls.__name__
    return RuntimeFailure.__name__


def main(argv: Sequence[str]) -> int:
    parent, uri, cache, *flags = argv
    if any(flag != OFFLINE_FLAG for flag in flags):
        print(f"usage: python -m nimctl.server.fetch PARENT_PID URI CACHE [{OFFLINE_FLAG}]", file=sys.stderr)
        return 2
    die_with_parent(int(parent))
    # The answer gets the real stdout; whatever the fetch prints (C libraries included) goes to stderr.
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    lock = threading.Lock()  # the download's worker threads report progress too

    def send(message: dict[str, Any]) -> None:
        with lock:
            if not answer.closed:  # a progress report from a worker thread may come after the answer
                answer.write(json.dumps(message) + "\n")
                answer.flush()

    def report(progress: FetchProgress) -> None:
        send({"progress": progress.to_dict()})

    try:
        folder = parse_model_source(uri).fetch(Path(cache), on_progress=report, offline=OFFLINE_FLAG in flags)
    except NimctlError as exc:
        result: dict[str, object] = {"error": exc.message, "hint": exc.hint, "kind": _kind(exc)}
        code = 1
    else:
        result = {"folder": str(folder)}
        code = 0
    send(result)
    with lock:
        answer.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
