"""Signal handlers for the length of a block: how a foreground run and a profile sweep make sure
a stop signal never leaves an instance behind (:mod:`nimctl.cli.run`, :mod:`nimctl.bench.profile_sweep`)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any]


@contextlib.contextmanager
def handling(signums: Iterable[signal.Signals], handler: Handler) -> Iterator[None]:
    """``handler`` for each of ``signums`` while the block runs, the previous ones put back after.

    Python sets handlers in the main thread only; elsewhere (a test's thread, a library caller's
    worker) the block runs with the handlers it has.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
