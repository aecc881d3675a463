"""Fetching model files from a command: the transfer bar, and a Ctrl-C that lands at once.

``nimctl pull`` and NIM's ``download-to-cache`` / ``create-model-store`` share it. The fetch runs
in a thread while this one waits in short, interruptible steps: waiting on huggingface_hub's
download pool directly, Ctrl-C would only land when its reads return, which on a stalled
connection is never. On Ctrl-C the finished files stay (the same command fetches only the rest),
the partial files of this fetch are dropped, and the process leaves at once (exit 130).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pathlib import Path

    from nimctl.output import Output
    from nimctl.store.progress import ProgressListener
    from nimctl.store.source import ModelSource

T = TypeVar("T")


def fetch_with_bar(
    out: Output,
    source: ModelSource,
    cache: Path,
    work: Callable[[ProgressListener], T],
    *,
    verb: str = "pulling",
) -> T:
    """``work(on_progress)``, drawn as a transfer bar on a terminal; Ctrl-C as the module says."""
    from nimctl.cli.transfer_bar import TransferBar

    bar = TransferBar(out, f"{verb} {source.uri}")
    started = time.time()
    try:
        with bar:
            return _in_background(
                lambda: work(lambda p: bar.update(p.bytes_done, p.bytes_total, p.files_done, p.files_total))
            )
    except KeyboardInterrupt:
        bar.stop()
        _leave(out, source, cache, started)
        raise  # not reached: _leave exits


def _in_background(work: Callable[[], T]) -> T:
    outcome: list[T | BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome.append(exc)

    worker = threading.Thread(target=run, name="nimctl-fetch", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _leave(out: Output, source: ModelSource, cache: Path, started: float) -> None:
    from nimctl.errors import EXIT_INTERRUPTED
    from nimctl.store.pull import drop_partial

    if source.kind == "hf":
        drop_partial(cache, source.name, since=started)
    out.error(
        f"interrupted: fetching {source.uri} stopped",
        hint="the finished files are kept; run the same command again to fetch the rest",
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)
