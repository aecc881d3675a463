"""Logging set-up from ``NIM_LOG_LEVEL`` and ``NIM_JSONL_LOGGING``, and what keeps the log small.

JSONL lines carry NIM's keys: ``level``, ``time``, ``file_name``, ``line_number``, ``message``.

A flood of bad requests must not flood the log (each engine 500 printed a traceback of about
9 KB). Below DEBUG, two things hold it back:

* :class:`TracebackCollapser`: a traceback in the engine's output becomes its exception line,
  with a note of how many lines were left out;
* :class:`RepeatFilter`: a message (digits aside: times, pids, ports differ) is logged at most
  :data:`REPEAT_BURST` times in :data:`REPEAT_WINDOW_S` seconds; then one line says how many
  more there were.

``NIM_LOG_LEVEL=DEBUG`` logs everything as it came.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

REPEAT_WINDOW_S = 10.0
REPEAT_BURST = 5
# Messages tracked at once; a flood of distinct ones reports the oldest early rather than grow.
REPEAT_KEYS = 512


class JsonlFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return json.dumps(
            {
                "level": record.levelname,
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "file_name": record.pathname,
                "line_number": record.lineno,
                "message": message,
            }
        )


def configure_logging(level: str, jsonl: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonlFormatter() if jsonl else logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s")
    )
    if level != "DEBUG":
        repeats = RepeatFilter(handler.handle)
        handler.addFilter(repeats)
        repeats.start_flushing()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Access lines for every proxied request drown the rest; keep them for DEBUG.
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    logging.getLogger("uvicorn.access").setLevel(quiet)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


# --- Repeats ------------------------------------------------------------------------------------

_DIGITS = re.compile(r"\d+")


@dataclass
class _Window:
    started: float
    seen: int = 1
    held_back: int = 0
    last: logging.LogRecord | None = None  # the last one held back: its text goes in the count line


class RepeatFilter(logging.Filter):
    """Lets a message through :data:`REPEAT_BURST` times per window; counts the rest and says so.

    The count line is given to ``emit`` when the window closes: by :meth:`flush`, which
    :meth:`start_flushing` calls once a second from a daemon thread, or by the next such
    message, whichever comes first.
    """

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        *,
        window_s: float = REPEAT_WINDOW_S,
        burst: int = REPEAT_BURST,
        max_keys: int = REPEAT_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.emit, self.clock = emit, clock
        self.window_s, self.burst, self.max_keys = window_s, burst, max_keys
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeat_count", False):
            return True  # our own count line
        try:
            key = (record.name, record.levelno, _DIGITS.sub("#", record.getMessage()))
        except Exception:  # a bad format string: the handler reports it as logging does
            return True
        now = self.clock()
        closed = None
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.started >= self.window_s:
                closed = self._windows.pop(key, None)
                if len(self._windows) >= self.max_keys:
                    oldest = next(iter(self._windows))
                    self._report(self._windows.pop(oldest), now)
                self._windows[key] = _Window(now)
                keep = True
            else:
                window.seen += 1
                keep = window.seen <= self.burst
                if not keep:
                    window.held_back += 1
                    window.last = record
        if closed is not None:
            self._report(closed, now)
        return keep

    def flush(self) -> None:
        """Report and forget every window that has closed."""
        now = self.clock()
        with self._lock:
            closed = [key for key, window in self._windows.items() if now - window.started >= self.window_s]
            windows = [self._windows.pop(key) for key in closed]
        for window in windows:
            self._report(window, now)

    def start_flushing(self, every_s: float = 1.0) -> None:
        def run() -> None:
            while True:
                time.sleep(every_s)
                self.flush()

        threading.Thread(target=run, name="log-repeats", daemon=True).start()

    def _report(self, window: _Window, now: float) -> None:
        if not window.held_back or window.last is None:
            return
        last = window.last
        span = min(now - window.started, self.window_s)
        note = f"(repeated {window.held_back} more times in the last {span:.0f} s)"
        count = logging.makeLogRecord(
            {
                **last.__dict__,
                "msg": f"{last.getMessage()} {note}",
                "args": None,
                "exc_info": None,
                "exc_text": None,
                "created": time.time(),
                "repeat_count": True,
            }
        )
        self.emit(count)


# --- Tracebacks in the engine's output ----------------------------------------------------------

# vLLM prefixes its processes' lines with "(APIServer pid=12)"; colours when it thinks it may.
_PREFIX = re.compile(r"^(\x1b\[[\d;]*m)*\((?P<process>[^)\s]+) pid=\d+\)(\x1b\[[\d;]*m)*\s?")
_ANSI = re.compile(r"\x1b\[[\d;]*m")
_TRACEBACK_START = "Traceback (most recent call last):"
_CHAINING = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
# "ValueError: ...", "vllm.v1.engine.exceptions.EngineDeadError", not "INFO:     127.0.0.1 ...".
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*[a-z]\w*(?::|$)")
# A "traceback" longer than this is more likely indented output after one: let it through.
MAX_TRACEBACK_LINES = 2000


@dataclass
class _Traceback:
    lines: int = 0
    exception: str | None = None


class TracebackCollapser:
    """Turns the engine's output into log lines, a traceback into its exception line.

    ``feed`` takes one line and returns what to log (often nothing). A traceback (also one in
    an exception group, or chained) is counted, not kept: at its end comes its exception line
    and the count of lines left out. Lines of different processes (vLLM's prefixes) may
    interleave, so each process has its own traceback in progress. Blank lines are dropped.
    """

    def __init__(self) -> None:
        self._open: dict[str, _Traceback] = {}

    def feed(self, line: str) -> list[str]:
        match = _PREFIX.match(line)
        process = match.group("process") if match else ""
        body = _ANSI.sub("", line[match.end() :] if match else line).rstrip()
        if not body.strip() or body.strip() in _CHAINING:
            if process in self._open:
                self._open[process].lines += 1
            return []
        if _TRACEBACK_START in body and (body[0] in " \t|+" or body.startswith(("Traceback", "Exception"))):
            self._open.setdefault(process, _Traceback()).lines += 1
            return []
        traceback = self._open.get(process)
        if traceback is None:
            return [line]
        if traceback.lines >= MAX_TRACEBACK_LINES:
            del self._open[process]
            return [self._summary("", traceback.exception, traceback), line]
        if body[0] in " \t|+":  # frames, source lines, an exception group's box
            traceback.lines += 1
            inner = body.lstrip(" \t|+-")
            if _EXCEPTION.match(inner):
                traceback.exception = inner
            return []
        del self._open[process]
        if _EXCEPTION.match(body):  # the traceback's last line
            return [self._summary(line[: match.end()] if match else "", body, traceback)]
        return [self._summary("", traceback.exception, traceback), line]

    def flush(self) -> list[str]:
        """What is left at the end of the output: tracebacks cut short."""
        left = [self._summary("", t.exception, t) for t in self._open.values()]
        self._open.clear()
        return left

    @staticmethod
    def _summary(prefix: str, exception: str | None, traceback: _Traceback) -> str:
        note = f"[{traceback.lines} traceback lines left out; NIM_LOG_LEVEL=DEBUG logs them]"
        return f"{prefix}{exception or 'an exception'} {note}"
