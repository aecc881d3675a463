"""``nimctl top``'s screen: a full-screen Rich Live redrawn every interval, keys read from the
terminal in cbreak mode (one key at a time, no echo) between frames with ``select``.

``q`` quits; so do Ctrl-C (``KeyboardInterrupt``), SIGTERM and SIGHUP, the same way: all leave the alternate
screen, restore the terminal's settings as they were and end with exit status 0. The
terminal is restored in ``finally`` blocks, whatever ends the loop.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nimctl.cli.live_view import render_frame

if TYPE_CHECKING:
    from rich.console import Console

    from nimctl.runtime.live import Frame, Watch

QUIT_KEYS = {b"q", b"Q"}
FOOTER = "q quits · Ctrl-C too"


def sample_deadline(interval: float) -> float:
    """Each frame's reads must be in before the next frame is due."""
    return max(0.1, min(1.0, interval * 0.8))


def run_screen(watch: Watch, console: Console, *, interval: float) -> None:
    """Draw frames until ``q`` or Ctrl-C; returns normally for both."""
    from rich.live import Live

    fd = sys.stdin.fileno()
    screen = Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False)
    # Left in this order: the screen (Live), then the interrupt is swallowed, then the settings.
    with cbreak(fd), contextlib.suppress(KeyboardInterrupt), _interrupted_by_hangup_or_term(), screen as live:
        due = time.monotonic()
        while True:
            frame = watch.step(sample_deadline(interval))
            live.update(render_frame(frame, footer=FOOTER), refresh=True)
            due = max(due + interval, time.monotonic())
            if _quit_pressed(fd, until=due):
                return


def _quit_pressed(fd: int, *, until: float) -> bool:
    """Wait for ``until``, reading keys; True when one of them quits (or stdin has closed)."""
    while (left := until - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], left)
        if readable:
            keys = os.read(fd, 64)
            if not keys or any(bytes([key]) in QUIT_KEYS for key in keys):
                return True
    return False


@contextlib.contextmanager
def _interrupted_by_hangup_or_term() -> Iterator[None]:
    """SIGTERM (``timeout nimctl top``, a kill) and SIGHUP (the terminal closed) end the view as
    Ctrl-C does, through the ``finally`` blocks that restore the terminal; their default action
    would leave it in cbreak mode on the alternate screen."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    saved = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """The terminal in cbreak mode for the block (keys arrive one at a time, unechoed, and
    Ctrl-C still interrupts), then exactly as it was."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def one_frame(watch: Watch, *, interval: float) -> Frame:
    """``--once``: two reads ``interval`` apart, so that the interval's figures (TTFT, ITL,
    tokens/s) are there; the frame of the second."""
    watch.step(sample_deadline(interval))
    time.sleep(interval)  # the sampling interval itself, not a wait for some condition
    return watch.step(sample_deadline(interval))
