"""How far a fetch has come, and the adapter that reads it out of huggingface_hub.

:class:`FetchProgress` is what a listener gets: ``nimctl pull`` draws it as a Rich bar, and
``nim-serve``'s fetch child sends it to the front as JSON lines, so that ``/v1/health/ready``
and ``nimctl run`` can say "downloading 45 %, 1.2 of 2.6 GB". The numbers come from
huggingface_hub's own progress hooks (its ``tqdm_class``), so nothing is counted twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

# Listeners are called at most this often (and once more at the end).
REPORT_EVERY_S = 0.25


@dataclass(frozen=True)
class FetchProgress:
    """``bytes_*`` count the files still to fetch (a resumed file starts at what is on disk)."""

    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int

    @property
    def fraction(self) -> float:
        return min(1.0, self.bytes_done / self.bytes_total) if self.bytes_total else 1.0

    def describe(self) -> str:
        """One phrase for a status line: ``downloading 45 %, 1.2 of 2.6 GB, 3 of 9 files``."""
        return (
            f"downloading {int(self.fraction * 100)} %, {gigabytes(self.bytes_done, self.bytes_total)}, "
            f"{self.files_done} of {self.files_total} files"
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FetchProgress:
        return cls(
            **{key: int(data[key]) for key in ("bytes_done", "bytes_total", "files_done", "files_total")}
        )


def gigabytes(done: int, total: int) -> str:
    """``1.2 of 2.6 GB`` (MB below a gigabyte)."""
    unit, scale = ("GB", 1e9) if total >= 1e9 else ("MB", 1e6)
    return f"{done / scale:.1f} of {total / scale:.1f} {unit}"


ProgressListener = Callable[[FetchProgress], None]


class ProgressTracker:
    """Counts what huggingface_hub reports and calls the listener, at most every REPORT_EVERY_S.

    A change held back by that limit is reported when the interval is up (by one reporter thread),
    not with the next update: huggingface_hub writes in 10 MB chunks, so a stalled or slow file may send no
    update for long, and the last few small files must not stay unreported meanwhile.
    """

    def __init__(self, listener: ProgressListener | None, *, bytes_total: int, files_total: int) -> None:
        self.listener = listener
        self.bytes_total = bytes_total
        self.files_total = files_total
        self.bytes_done = 0
        self.files_done = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._last = 0.0
        self._pending = False  # a change held back by the interval, left to the reporter thread
        self._closed = False
        # Reports are numbered under _lock and sent under _sending, so one taken earlier but sent
        # later (the reporter racing a download thread) is dropped instead of undoing a newer one.
        self._sending = threading.Lock()
        self._taken = 0
        self._sent = 0
        # One reporter thread for the whole fetch, started here (in the caller's thread), not a Timer per
        # interval started by a download thread: Thread.start() waits until the new thread has run, i.e.
        # has won the GIL from 8 busy download threads, and that was done holding _lock (stalls of ~50 ms).
        self._reporter: threading.Thread | None = None
        if listener is not None:
            self._reporter = threading.Thread(
                target=self._report_held_back, name="nimctl-progress", daemon=True
            )
            self._reporter.start()

    def snapshot(self) -> FetchProgress:
        return FetchProgress(
            min(self.bytes_done, self.bytes_total), self.bytes_total, self.files_done, self.files_total
        )

    def add(self, *, nbytes: int = 0, files: int = 0, force: bool = False) -> None:
        with self._lock:
            self.bytes_done += nbytes
            self.files_done += files
            if self.listener is None:
                return
            now = time.monotonic()
            if not force and now - self._last < REPORT_EVERY_S:
                if not self._pending:
                    self._pending = True
                    self._wake.notify()  # the reporter sends it when the interval is up
                return
            self._pending = False
            self._last = now
            self._taken += 1
            number, progress = self._taken, self.snapshot()
        self._send(number, progress)

    def close(self) -> None:
        """Stops the reporter thread; a change still held back is dropped (add(force=True) first)."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        if self._reporter is not None and self._reporter is not threading.current_thread():
            self._reporter.join()

    def _report_held_back(self) -> None:
        """The reporter thread: sends a held-back change once its interval is up, until close()."""
        while True:
            with self._lock:
                while not self._closed:
                    wait = REPORT_EVERY_S - (time.monotonic() - self._last)
                    if self._pending and wait <= 0:
                        break
                    self._wake.wait(wait if self._pending else None)
                if self._closed:
                    return
                self._pending = False  # a forced report meanwhile clears it: nothing left to send
                self._last = time.monotonic()
                self._taken += 1
                number, progress = self._taken, self.snapshot()
            self._send(number, progress)

    def _send(self, number: int, progress: FetchProgress) -> None:
        with self._sending:
            if number < self._sent or self.listener is None:
                return
            self._sent = number
            self.listener(progress)

    def tqdm_class(self) -> type:
        """A class huggingface_hub can use as ``tqdm_class``, feeding this tracker."""
        return _bar_class(self)


def _bar_class(tracker: ProgressTracker) -> type:
    class TrackingBar:
        """Duck-typed tqdm: snapshot_download makes three (bytes received, bytes written, files);
        the bytes-written bar and the files bar are counted, the received one is not (the same bytes)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.desc = str(kwargs.get("desc") or "")
            self.unit = kwargs.get("unit", "it")
            self.total = kwargs.get("total")
            self.n = kwargs.get("initial", 0) or 0
            self.counts = (
                "bytes"
                if self.unit == "B" and not self.desc.startswith("Downloading")
                else ("files" if self.unit != "B" else None)
            )

        def update(self, n: float | None = 1) -> None:
            step = int(n or 0)
            self.n += step
            if self.counts == "bytes":
                tracker.add(nbytes=step)
            elif self.counts == "files":
                tracker.add(files=step)

        @property
        def format_dict(self) -> dict[str, Any]:
            return {"rate": None, "n": self.n, "total": self.total}

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            pass

        def set_description(self, *args: Any, **kwargs: Any) -> None:
            pass

        set_description_str = set_postfix_str = set_postfix = set_description

        def __enter__(self) -> TrackingBar:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    return TrackingBar
